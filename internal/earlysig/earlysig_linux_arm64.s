#include "textflag.h"

// handler is the early handler, called by the kernel with the C calling
// convention (R0 = the signal's number, R1 = its siginfo, R30 = the
// restorer) on the thread's signal stack. A signal the kernel raised
// (si_code, at offset 8 of the siginfo, above 0) goes on to the handler Fwd
// keeps for it, as if the kernel had called that one; any other writes one
// byte, sigBytes[R0], to the pipe WriteFd and returns to sigReturn. The
// registers it uses are restored by rt_sigreturn; a full pipe drops the
// byte (EAGAIN).
TEXT handler<>(SB), NOSPLIT|NOFRAME, $0
	MOVW 8(R1), R3
	CMPW $0, R3
	BLE  user
	MOVD $·Fwd(SB), R4
	MOVD (R4)(R0<<3), R4
	CBZ  R4, user
	JMP  (R4)
user:
	MOVD $·sigBytes(SB), R1
	ADD  R0, R1, R1
	MOVW ·WriteFd(SB), R0
	MOVD $1, R2
	MOVD $64, R8 // write
	SVC
	RET

// sigReturn is the sigaction's restorer.
TEXT sigReturn<>(SB), NOSPLIT|NOFRAME, $0
	MOVD $139, R8 // rt_sigreturn
	SVC
	BRK

// func rawSigaction(sig uintptr, act, old unsafe.Pointer) uintptr
TEXT ·rawSigaction(SB), NOSPLIT, $0-32
	MOVD sig+0(FP), R0
	MOVD act+8(FP), R1
	MOVD old+16(FP), R2
	MOVD $8, R3 // sizeof(sigset_t)
	MOVD $134, R8 // rt_sigaction
	SVC
	MOVD R0, ret+24(FP)
	RET

// func rawPipe2(p *[2]int32, flags uintptr) uintptr
TEXT ·rawPipe2(SB), NOSPLIT, $0-24
	MOVD p+0(FP), R0
	MOVD flags+8(FP), R1
	MOVD $59, R8 // pipe2
	SVC
	MOVD R0, ret+16(FP)
	RET

// func rawClose(fd uintptr) uintptr
TEXT ·rawClose(SB), NOSPLIT, $0-16
	MOVD fd+0(FP), R0
	MOVD $57, R8 // close
	SVC
	MOVD R0, ret+8(FP)
	RET

// func rawClockGettime(clock uintptr, ts *[2]int64) uintptr
TEXT ·rawClockGettime(SB), NOSPLIT, $0-24
	MOVD clock+0(FP), R0
	MOVD ts+8(FP), R1
	MOVD $113, R8 // clock_gettime, not through the vDSO
	SVC
	MOVD R0, ret+16(FP)
	RET

DATA ·handlerPC+0(SB)/8, $handler<>(SB)
GLOBL ·handlerPC(SB), RODATA, $8
DATA ·returnPC+0(SB)/8, $sigReturn<>(SB)
GLOBL ·returnPC(SB), RODATA, $8
