package body

import (
	"bytes"
	"encoding/json"
	"os"
	"testing"
)

// BenchmarkDecode decodes the reference workload's task.request body.
func BenchmarkDecode(b *testing.B) {
	data, err := os.ReadFile("testdata/task.request.json")
	if err != nil {
		b.Fatal(err)
	}
	b.SetBytes(int64(len(data)))
	b.ReportAllocs()
	for b.Loop() {
		if _, err := Decode(data, Limits{}); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkDecodeStdlib is the comparison: encoding/json with UseNumber,
// which does not reject duplicate keys.
func BenchmarkDecodeStdlib(b *testing.B) {
	data, err := os.ReadFile("testdata/task.request.json")
	if err != nil {
		b.Fatal(err)
	}
	b.SetBytes(int64(len(data)))
	b.ReportAllocs()
	for b.Loop() {
		dec := json.NewDecoder(bytes.NewReader(data))
		dec.UseNumber()
		var v any
		if err := dec.Decode(&v); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkCheckHeaders(b *testing.B) {
	h := Headers{ContentType: "application/json; charset=utf-8", PartialBody: "false"}
	b.ReportAllocs()
	for b.Loop() {
		if p := CheckHeaders(h); p != nil {
			b.Fatal(p)
		}
	}
}

// BenchmarkDecodeTape decodes the same body into a reused tape, as the
// schema step does, without converting it to maps.
func BenchmarkDecodeTape(b *testing.B) {
	data, err := os.ReadFile("testdata/task.request.json")
	if err != nil {
		b.Fatal(err)
	}
	s := string(data)
	b.SetBytes(int64(len(data)))
	b.ReportAllocs()
	t := AcquireTape()
	defer t.Release()
	for b.Loop() {
		if err := DecodeTapeString(s, Limits{}, t); err != nil {
			b.Fatal(err)
		}
	}
}
