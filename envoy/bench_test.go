package envoy

import (
	"bytes"
	"os"
	"path/filepath"
	"testing"

	"go.yaml.in/yaml/v3"
)

func BenchmarkTranslateAgent(b *testing.B) {
	for _, tc := range []struct{ in, node string }{
		{"quickstart", "planner"},
		{"credentials", "researcher"},
		{"jwt", "planner"},
	} {
		b.Run(tc.in+"/"+tc.node, func(b *testing.B) {
			data, err := os.ReadFile(filepath.Join("testdata", "in", tc.in+".yaml"))
			if err != nil {
				b.Fatal(err)
			}
			var m Mesh
			if err := yaml.Unmarshal(data, &m); err != nil {
				b.Fatal(err)
			}
			b.ReportAllocs()
			for b.Loop() {
				if _, err := TranslateAgent(m, tc.node); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// FuzzTranslate feeds arbitrary mesh documents to Translate: it must never
// panic, and whatever it accepts must pass the Envoy API's validation with
// every reference resolved.
func FuzzTranslate(f *testing.F) {
	inputs, _ := filepath.Glob(filepath.Join("testdata", "in", "*.yaml"))
	for _, in := range inputs {
		data, err := os.ReadFile(in)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(data)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		var m Mesh
		dec := yaml.NewDecoder(bytes.NewReader(data))
		if err := dec.Decode(&m); err != nil {
			return
		}
		nodes, err := Translate(m)
		if err != nil {
			return
		}
		for node, nr := range nodes {
			checkNode(t, node, nr)
		}
	})
}
