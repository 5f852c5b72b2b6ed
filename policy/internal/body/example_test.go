package body_test

import (
	"errors"
	"fmt"

	"github.com/meshward/meshward/policy/internal/body"
)

func ExampleDecode() {
	_, err := body.Decode([]byte(`{"role":"user","Role":"admin"}`), body.Limits{})
	var e *body.Error
	if errors.As(err, &e) {
		p := e.Problem()
		fmt.Println(p.Status, p.Code)
		fmt.Println(p.Message)
	}
	// Output:
	// 400 invalid_json
	// invalid JSON at line 1, column 16 (byte 15): keys "role" and "Role" differ only in case
}

func ExampleCheckHeaders() {
	h := map[string]string{"content-type": "application/json", "content-encoding": "gzip"}
	if p := body.CheckHeaders(body.HeadersFrom(func(n string) string { return h[n] })); p != nil {
		fmt.Println(p.Status, p.Code)
	}
	// Output: 415 unsupported_content_encoding
}
