package secrets_test

import (
	"context"
	"fmt"
	"time"

	"github.com/meshward/meshward/secrets"
)

// Example runs the default source (the embedded local CA) the way the xDS
// server uses it: register identities, run, read SVIDs and the bundle,
// and learn which identities changed.
func Example() {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	m, err := secrets.New(secrets.Config{}) // source: local, certTTL: 1h
	if err != nil {
		panic(err)
	}
	const id = "spiffe://mesh.local/ns/default/sa/planner"
	if err := m.Register(id); err != nil {
		panic(err)
	}
	sub := m.Subscribe()
	defer sub.Close()
	done := make(chan error, 1)
	go func() { done <- m.Run(ctx) }()

	var change secrets.Change
	for len(change.SVIDs) == 0 { // the first issuance (the bundle may come first)
		if change, err = sub.Next(ctx); err != nil {
			panic(err)
		}
	}
	svid, _ := m.SVID(ctx, id)
	bundle, _ := m.Bundle(ctx)
	fmt.Println("changed:", change.SVIDs)
	fmt.Println("chain:", len(svid.Chain), "uri:", svid.Leaf().URIs[0])
	fmt.Println("verifies:", svid.Verify(bundle, time.Now()) == nil)
	cancel()
	<-done
	// Output:
	// changed: [spiffe://mesh.local/ns/default/sa/planner]
	// chain: 1 uri: spiffe://mesh.local/ns/default/sa/planner
	// verifies: true
}
