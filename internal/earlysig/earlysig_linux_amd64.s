#include "textflag.h"

// handler is the early handler, called by the kernel with the C calling
// convention (DI = the signal's number, SI = its siginfo) on the thread's
// signal stack. A signal the kernel raised (si_code, at offset 8 of the
// siginfo, above 0) goes on to the handler Fwd keeps for it, as if the
// kernel had called that one; any other writes one byte, sigBytes[DI], to
// the pipe WriteFd and returns to sigReturn. The registers it uses are
// restored by rt_sigreturn; a full pipe drops the byte (EAGAIN).
TEXT handler<>(SB), NOSPLIT|NOFRAME, $0
	MOVL  8(SI), AX
	CMPL  AX, $0
	JLE   user
	LEAQ  ·Fwd(SB), AX
	MOVQ  (AX)(DI*8), AX
	TESTQ AX, AX
	JZ    user
	JMP   AX
user:
	LEAQ  ·sigBytes(SB), SI
	ADDQ  DI, SI
	MOVL  ·WriteFd(SB), DI
	MOVQ  $1, DX
	MOVQ  $1, AX // write
	SYSCALL
	RET

// sigReturn is the sigaction's restorer.
TEXT sigReturn<>(SB), NOSPLIT|NOFRAME, $0
	MOVQ $15, AX // rt_sigreturn
	SYSCALL
	INT  $3

// func rawSigaction(sig uintptr, act, old unsafe.Pointer) uintptr
TEXT ·rawSigaction(SB), NOSPLIT, $0-32
	MOVQ sig+0(FP), DI
	MOVQ act+8(FP), SI
	MOVQ old+16(FP), DX
	MOVQ $8, R10 // sizeof(sigset_t)
	MOVQ $13, AX // rt_sigaction
	SYSCALL
	MOVQ AX, ret+24(FP)
	RET

// func rawPipe2(p *[2]int32, flags uintptr) uintptr
TEXT ·rawPipe2(SB), NOSPLIT, $0-24
	MOVQ p+0(FP), DI
	MOVQ flags+8(FP), SI
	MOVQ $293, AX // pipe2
	SYSCALL
	MOVQ AX, ret+16(FP)
	RET

// func rawClose(fd uintptr) uintptr
TEXT ·rawClose(SB), NOSPLIT, $0-16
	MOVQ fd+0(FP), DI
	MOVQ $3, AX // close
	SYSCALL
	MOVQ AX, ret+8(FP)
	RET

// func rawClockGettime(clock uintptr, ts *[2]int64) uintptr
TEXT ·rawClockGettime(SB), NOSPLIT, $0-24
	MOVQ clock+0(FP), DI
	MOVQ ts+8(FP), SI
	MOVQ $228, AX // clock_gettime, not through the vDSO
	SYSCALL
	MOVQ AX, ret+16(FP)
	RET

DATA ·handlerPC+0(SB)/8, $handler<>(SB)
GLOBL ·handlerPC(SB), RODATA, $8
DATA ·returnPC+0(SB)/8, $sigReturn<>(SB)
GLOBL ·returnPC(SB), RODATA, $8
