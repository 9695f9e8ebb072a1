#include "textflag.h"

// rawSigHandler is the handler of rawsig.go, called by the kernel with the
// C calling convention (R0 = the signal's number, R30 = the restorer) on
// the thread's signal stack. It writes one byte, rawSigBytes[R0], to the
// pipe rawSigFd and returns to rawSigReturn. The registers it uses are
// restored by rt_sigreturn; a full pipe drops the byte (EAGAIN), as the
// runtime drops a signal when a channel is full.
TEXT rawSigHandler<>(SB), NOSPLIT|NOFRAME, $0
	MOVD $·rawSigBytes(SB), R1
	ADD  R0, R1, R1
	MOVW ·rawSigFd(SB), R0
	MOVD $1, R2
	MOVD $64, R8 // write
	SVC
	RET

// rawSigReturn is the sigaction's restorer.
TEXT rawSigReturn<>(SB), NOSPLIT|NOFRAME, $0
	MOVD $139, R8 // rt_sigreturn
	SVC
	BRK

// rawMaskHandler is the handler maskAllThreads (rawsig.go) installs for
// maskSignal and sends to every thread: it changes the signal mask the
// kernel restores when the handler returns (uc_sigmask in the ucontext, R2,
// at offset 40 on arm64: after uc_flags, uc_link and uc_stack), adding
// rawMaskBlock and removing rawMaskUnblock, then counts itself done in
// rawMaskAcks. A mask changed inside a handler by rt_sigprocmask would not
// last: the return restores uc_sigmask.
TEXT rawMaskHandler<>(SB), NOSPLIT|NOFRAME, $0
	MOVD 40(R2), R3
	MOVD $·rawMaskBlock(SB), R4
	MOVD (R4), R4
	ORR  R4, R3, R3
	MOVD $·rawMaskUnblock(SB), R4
	MOVD (R4), R4
	BIC  R4, R3, R3
	MOVD R3, 40(R2)
	MOVD $·rawMaskAcks(SB), R4
again:
	LDAXRW (R4), R5 // not LDADDALW: that needs ARMv8.1
	ADDW   $1, R5, R5
	STLXRW R5, (R4), R6
	CBNZW  R6, again
	RET

DATA ·rawMaskHandlerPC+0(SB)/8, $rawMaskHandler<>(SB)
GLOBL ·rawMaskHandlerPC(SB), RODATA, $8
DATA ·rawSigHandlerPC+0(SB)/8, $rawSigHandler<>(SB)
GLOBL ·rawSigHandlerPC(SB), RODATA, $8
DATA ·rawSigReturnPC+0(SB)/8, $rawSigReturn<>(SB)
GLOBL ·rawSigReturnPC(SB), RODATA, $8
