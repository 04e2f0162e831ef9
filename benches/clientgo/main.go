// Command kache-clientgo times a client-go shared informer's initial sync, for kache's
// end-to-end benchmark (benches/src/bin/e2e-sync.rs) to set beside kache and kube-runtime.
//
// It connects with a kubeconfig, runs one shared informer for ConfigMaps or Pods in one
// namespace, as a client-go user would (informer factory, namespace index, no resync), asking
// for protobuf (client-go's default for built-in types) or JSON, and waits until the informer
// has synced. It prints one line on stdout that the benchmark reads:
//
//	clientgo-sync: time_ns=... peak=... synced=... heap=... objects=...
//
// time_ns is from starting the informer to its HasSynced; peak and synced are the process's
// peak RSS during the sync and its RSS once synced (informer running), both in bytes above
// its RSS just before; heap is the Go heap in use once synced, after a GC, above the same
// measure before.
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"runtime"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/cache"
	"k8s.io/client-go/tools/clientcmd"
)

func main() {
	kubeconfig := flag.String("kubeconfig", "", "kubeconfig of the API server")
	namespace := flag.String("namespace", "default", "namespace to watch")
	resource := flag.String("resource", "configmaps", "configmaps or pods")
	encoding := flag.String("encoding", "protobuf", "protobuf (client-go's default) or json")
	objects := flag.Int("objects", -1, "how many objects the synced store must hold (-1: any)")
	timeout := flag.Duration("timeout", 2*time.Minute, "how long the sync may take")
	flag.Parse()

	if err := run(*kubeconfig, *namespace, *resource, *encoding, *objects, *timeout); err != nil {
		fmt.Fprintln(os.Stderr, "kache-clientgo:", err)
		os.Exit(1)
	}
}

func run(kubeconfig, namespace, resource, encoding string, objects int, timeout time.Duration) error {
	config, err := clientcmd.BuildConfigFromFlags("", kubeconfig)
	if err != nil {
		return fmt.Errorf("reading the kubeconfig: %w", err)
	}
	// No client-side throttling: the benchmark's other clients have none either.
	config.QPS, config.Burst = -1, 0
	switch encoding {
	case "protobuf":
		// Left unset, the generated clients ask for protobuf for built-in types.
	case "json":
		config.ContentType = "application/json"
		config.AcceptContentTypes = "application/json"
	default:
		return fmt.Errorf("unknown encoding %q (protobuf or json)", encoding)
	}
	client, err := kubernetes.NewForConfig(config)
	if err != nil {
		return fmt.Errorf("building the client: %w", err)
	}

	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	// One small request first, so the connection (TLS session, buffers) is open before the
	// measurement, as the benchmark's Rust children do.
	if _, err := client.CoreV1().ConfigMaps(namespace).List(ctx, metav1.ListOptions{Limit: 1}); err != nil {
		return fmt.Errorf("warming the connection: %w", err)
	}

	factory := informers.NewSharedInformerFactoryWithOptions(client, 0, informers.WithNamespace(namespace))
	var informer cache.SharedIndexInformer
	switch resource {
	case "configmaps":
		informer = factory.Core().V1().ConfigMaps().Informer()
	case "pods":
		informer = factory.Core().V1().Pods().Informer()
	default:
		return fmt.Errorf("unknown resource %q (configmaps or pods)", resource)
	}

	before, err := startMeasure()
	if err != nil {
		return err
	}
	start := time.Now()
	factory.Start(ctx.Done())
	select {
	case <-informer.HasSyncedChecker().Done():
	case <-ctx.Done():
		return fmt.Errorf("the informer did not sync within %v", timeout)
	}
	elapsed := time.Since(start)
	after, err := before.finish()
	if err != nil {
		return err
	}

	held := len(informer.GetStore().ListKeys())
	if objects >= 0 && held != objects {
		return fmt.Errorf("the informer synced %d %s, not %d", held, resource, objects)
	}
	fmt.Printf("clientgo-sync: time_ns=%d peak=%d synced=%d heap=%d objects=%d\n",
		elapsed.Nanoseconds(), after.peak, after.rss, after.heap, held)
	// Keeps the informer, and so the store, reachable until the end of the measurement.
	runtime.KeepAlive(informer)
	cancel()
	factory.Shutdown()
	return nil
}
