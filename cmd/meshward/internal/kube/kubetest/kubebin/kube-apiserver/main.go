// Command kube-apiserver is the Kubernetes API server of k8s.io/kubernetes
// v1.37.2 (cmd/kube-apiserver), built from its Go module for meshward's
// integration tests only.
package main

import (
	"os"
	_ "time/tzdata" // as upstream's main: CronJob time zones

	"k8s.io/component-base/cli"
	_ "k8s.io/component-base/logs/json/register"          // as upstream's main: JSON log format
	_ "k8s.io/component-base/metrics/prometheus/clientgo" // as upstream's main: client-go metrics
	_ "k8s.io/component-base/metrics/prometheus/version"  // as upstream's main: version metric
	"k8s.io/kubernetes/cmd/kube-apiserver/app"
)

func main() {
	os.Exit(cli.Run(app.NewAPIServerCommand()))
}
