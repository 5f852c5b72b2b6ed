//go:build vtprotobuf

package extauthz

// builtWithVT: this test binary was built with -tags vtprotobuf.
const builtWithVT = true
