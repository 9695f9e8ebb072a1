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

DATA ·rawSigHandlerPC+0(SB)/8, $rawSigHandler<>(SB)
GLOBL ·rawSigHandlerPC(SB), RODATA, $8
DATA ·rawSigReturnPC+0(SB)/8, $rawSigReturn<>(SB)
GLOBL ·rawSigReturnPC(SB), RODATA, $8
