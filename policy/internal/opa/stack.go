package opa

// reserveEvalStack, when set, grows the goroutine's stack before each
// evaluation. OPA's evaluator recurses deeply (more than 64 KiB of stack
// for the reference policy), and gRPC runs every Check on a fresh
// goroutine with a small stack: left alone, the stack doubles several
// times during each evaluation, and every doubling copies the stack and
// walks all of its deep frames (a quarter of the CPU under load, half the
// cost of a decision). Calling a function with a 64 KiB frame first, while
// the stack is still shallow, grows it once, cheaply, to 128 KiB, which
// the evaluation fits in. Tests turn it off to measure the difference.
var reserveEvalStack = true

// growStack gives the calling goroutine room for an evaluation.
func growStack() {
	if reserveEvalStack {
		reserveStack()
	}
}

// reserveStack has a 64 KiB frame: calling it grows a smaller stack in a
// single copy (the prologue checks the whole frame against the stack).
// The array lives in a branch that never runs, so the frame is not zeroed
// on each call; stackSink keeps the array from being optimized away.
//
//go:noinline
func reserveStack() {
	if stackNeverTouched {
		var b [64 << 10]byte
		stackSink(&b[0])
	}
}

// stackNeverTouched is always false; being a variable, the compiler keeps
// the branch, and with it reserveStack's frame.
var stackNeverTouched = false

//go:noinline
func stackSink(*byte) {}
