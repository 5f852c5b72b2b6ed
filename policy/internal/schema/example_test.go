package schema_test

import (
	"fmt"

	"github.com/meshward/meshward/policy/internal/body"
	"github.com/meshward/meshward/policy/internal/schema"
)

func Example() {
	set, err := schema.Compile([]schema.Source{{
		Name:   "task.request",
		Origin: "schemas/task.request.json",
		Data:   []byte(`{"type":"object","properties":{"task":{"properties":{"priority":{"type":"integer","maximum":9}}}}}`),
	}}, schema.Options{})
	if err != nil {
		fmt.Println(err)
		return
	}
	doc, err := body.Decode([]byte(`{"task":{"priority":12}}`), body.Limits{})
	if err != nil {
		fmt.Println(err)
		return
	}
	for _, v := range set.Validate("task.request", doc) {
		fmt.Printf("%s %s: %s\n", v.Path, v.Keyword, v.Message)
	}
	// Output: /task/priority maximum: 12 > 9
}

func ExampleSelector_Select() {
	sel := schema.Selector{Field: "type", Schemas: map[string]string{"task.request": "task.request"}}
	doc, _ := body.Decode([]byte(`{"type":"task.cancel"}`), body.Limits{})
	_, err := sel.Select(doc)
	fmt.Println(err)
	// Output: no schema for this message: /type: unknown value "task.cancel"
}
