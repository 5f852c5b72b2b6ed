package kubetest

import (
	"context"
	"fmt"
	"sync"
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
)

// meshAgents is the MeshAgent resource (kube.MeshAgents; kubetest does
// not import kube, whose tests import kubetest).
var meshAgents = schema.GroupVersionResource{Group: "meshward.dev", Version: "v1alpha1", Resource: "meshagents"}

// ScaleMesh is a mesh of many agents as cluster objects, made by
// CreateScaleMesh: agent i is MeshAgent Agents[i] with ServiceAccount of
// the same name, its pods Pods[i] (label app=<agent>), and one peer, the
// next agent (the last one's, the first), over EDS (no addresses): its
// endpoints are the next agent's pods.
type ScaleMesh struct {
	Namespace string
	Agents    []string
	Pods      [][]string
}

// AgentName is the name of agent i of a ScaleMesh.
func AgentName(i int) string { return fmt.Sprintf("agent-%04d", i) }

// CreateScaleMesh creates in namespace (which must exist) agents
// ServiceAccounts and MeshAgents and pods pods of each, with parallel
// requests (rc's QPS and Burst are raised for it). No scheduler or
// kubelet runs: each pod's status is written as a kubelet would, Running
// with its own IP (PodIP(i, j)) and Ready.
func CreateScaleMesh(t testing.TB, ctx context.Context, rc *rest.Config, namespace string, agents, pods int) *ScaleMesh {
	t.Helper()
	rc = rest.CopyConfig(rc)
	rc.QPS, rc.Burst = 5000, 10000
	kc, err := kubernetes.NewForConfig(rc)
	if err != nil {
		t.Fatal(err)
	}
	dyn, err := dynamic.NewForConfig(rc)
	if err != nil {
		t.Fatal(err)
	}
	m := &ScaleMesh{Namespace: namespace}
	for i := range agents {
		m.Agents = append(m.Agents, AgentName(i))
		var ps []string
		for j := range pods {
			ps = append(ps, fmt.Sprintf("%s-%d", AgentName(i), j))
		}
		m.Pods = append(m.Pods, ps)
	}
	// The ServiceAccounts first: pod admission wants them.
	parallel(t, agents, func(i int) error {
		_, err := kc.CoreV1().ServiceAccounts(namespace).Create(ctx, &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: m.Agents[i]}}, metav1.CreateOptions{})
		return err
	})
	parallel(t, agents*(pods+1), func(k int) error {
		i, j := k/(pods+1), k%(pods+1)
		name := m.Agents[i]
		if j == pods {
			next := m.Agents[(i+1)%agents]
			u := &unstructured.Unstructured{Object: map[string]any{
				"apiVersion": "meshward.dev/v1alpha1", "kind": "MeshAgent",
				"metadata": map[string]any{"name": name, "namespace": namespace},
				"spec": map[string]any{
					"selector":           map[string]any{"matchLabels": map[string]any{"app": name}},
					"serviceAccountName": name,
					"inboundPort":        int64(15001), "outboundPort": int64(15003), "app": "127.0.0.1:8080",
					"peers": []any{map[string]any{"name": next}},
				}}}
			_, err := dyn.Resource(meshAgents).Namespace(namespace).Create(ctx, u, metav1.CreateOptions{})
			return err
		}
		pod := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: m.Pods[i][j], Labels: map[string]string{"app": name}},
			Spec: corev1.PodSpec{ServiceAccountName: name, AutomountServiceAccountToken: new(bool),
				Containers: []corev1.Container{{Name: "app", Image: "example.invalid/agent"}}}}
		p, err := kc.CoreV1().Pods(namespace).Create(ctx, pod, metav1.CreateOptions{})
		if err != nil {
			return err
		}
		ip := PodIP(i, j)
		p.Status = corev1.PodStatus{Phase: corev1.PodRunning, PodIP: ip, PodIPs: []corev1.PodIP{{IP: ip}},
			Conditions: []corev1.PodCondition{{Type: corev1.PodReady, Status: corev1.ConditionTrue, LastTransitionTime: metav1.Now()}}}
		_, err = kc.CoreV1().Pods(namespace).UpdateStatus(ctx, p, metav1.UpdateOptions{})
		return err
	})
	return m
}

// PodIP is the IP of pod j of agent i: 10.<i/256>.<i%256>.<j+1>
// (i < 65536, j < 255).
func PodIP(i, j int) string { return fmt.Sprintf("10.%d.%d.%d", i/256, i%256, j+1) }

// parallel runs f(0..n-1) on 32 goroutines; the test fails on the first
// error.
func parallel(t testing.TB, n int, f func(int) error) {
	t.Helper()
	var (
		wg    sync.WaitGroup
		mu    sync.Mutex
		first error
	)
	next := make(chan int)
	for range 32 {
		wg.Go(func() {
			for i := range next {
				if err := f(i); err != nil {
					mu.Lock()
					if first == nil {
						first = err
					}
					mu.Unlock()
				}
			}
		})
	}
	for i := range n {
		next <- i
	}
	close(next)
	wg.Wait()
	if first != nil {
		t.Fatalf("kubetest: %v", first)
	}
}
