#include "textflag.h"

// rawSigHandler is the handler of rawsig.go, called by the kernel with the
// C calling convention (DI = the signal's number) on the thread's signal
// stack. It writes one byte, rawSigBytes[DI], to the pipe rawSigFd and
// returns to rawSigReturn. The registers it uses are restored by
// rt_sigreturn; a full pipe drops the byte (EAGAIN), as the runtime drops a
// signal when a channel is full.
TEXT rawSigHandler<>(SB), NOSPLIT|NOFRAME, $0
	LEAQ  ·rawSigBytes(SB), SI
	ADDQ  DI, SI
	MOVL  ·rawSigFd(SB), DI
	MOVQ  $1, DX
	MOVQ  $1, AX // write
	SYSCALL
	RET

// rawSigReturn is the sigaction's restorer.
TEXT rawSigReturn<>(SB), NOSPLIT|NOFRAME, $0
	MOVQ $15, AX // rt_sigreturn
	SYSCALL
	INT  $3

// rawMaskHandler is the handler maskAllThreads (rawsig.go) installs for
// maskSignal and sends to every thread: it changes the signal mask the
// kernel restores when the handler returns (uc_sigmask in the ucontext, DX,
// at offset 296 on amd64: uc_flags, uc_link, uc_stack (24) and
// uc_mcontext (256) come first), adding rawMaskBlock and removing
// rawMaskUnblock, then counts itself done in rawMaskAcks. A mask changed
// inside a handler by rt_sigprocmask would not last: the return restores
// uc_sigmask.
TEXT rawMaskHandler<>(SB), NOSPLIT|NOFRAME, $0
	MOVQ 296(DX), AX
	ORQ  ·rawMaskBlock(SB), AX
	MOVQ ·rawMaskUnblock(SB), CX
	NOTQ CX
	ANDQ CX, AX
	MOVQ AX, 296(DX)
	MOVL $1, AX
	LOCK
	XADDL AX, ·rawMaskAcks(SB)
	RET

DATA ·rawMaskHandlerPC+0(SB)/8, $rawMaskHandler<>(SB)
GLOBL ·rawMaskHandlerPC(SB), RODATA, $8
DATA ·rawSigHandlerPC+0(SB)/8, $rawSigHandler<>(SB)
GLOBL ·rawSigHandlerPC(SB), RODATA, $8
DATA ·rawSigReturnPC+0(SB)/8, $rawSigReturn<>(SB)
GLOBL ·rawSigReturnPC(SB), RODATA, $8
