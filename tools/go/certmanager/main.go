// Command cert-manager-controller runs cert-manager's own controllers (certificates,
// certificate requests with the CA and self-signed issuers, the approver, the issuer
// readiness controllers and ingress-shim) from the packages of cert-manager's root module.
//
// cert-manager's cmd/controller is a separate Go module the module proxy does not serve,
// so this small main wires the same registered controllers. It blank-imports only the
// issuers the test bed uses: the Venafi issuer would pull github.com/Venafi/vcert/v5,
// which the proxy refuses.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/signal"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"k8s.io/klog/v2"

	controllerpkg "github.com/cert-manager/cert-manager/pkg/controller"
	logf "github.com/cert-manager/cert-manager/pkg/logs"

	_ "github.com/cert-manager/cert-manager/pkg/controller/certificate-shim/ingresses"
	_ "github.com/cert-manager/cert-manager/pkg/controller/certificaterequests/approver"
	_ "github.com/cert-manager/cert-manager/pkg/controller/certificaterequests/ca"
	_ "github.com/cert-manager/cert-manager/pkg/controller/certificaterequests/selfsigned"
	_ "github.com/cert-manager/cert-manager/pkg/controller/certificates/issuing"
	_ "github.com/cert-manager/cert-manager/pkg/controller/certificates/keymanager"
	_ "github.com/cert-manager/cert-manager/pkg/controller/certificates/readiness"
	_ "github.com/cert-manager/cert-manager/pkg/controller/certificates/requestmanager"
	_ "github.com/cert-manager/cert-manager/pkg/controller/certificates/revisionmanager"
	_ "github.com/cert-manager/cert-manager/pkg/controller/certificates/trigger"
	_ "github.com/cert-manager/cert-manager/pkg/controller/clusterissuers"
	_ "github.com/cert-manager/cert-manager/pkg/controller/issuers"
	_ "github.com/cert-manager/cert-manager/pkg/issuer/ca"
	_ "github.com/cert-manager/cert-manager/pkg/issuer/selfsigned"
)

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "cert-manager-controller:", err)
		os.Exit(1)
	}
}

func run() error {
	fs := flag.NewFlagSet("cert-manager-controller", flag.ContinueOnError)
	klog.InitFlags(fs)
	kubeconfig := fs.String("kubeconfig", "", "kubeconfig file")
	clusterNS := fs.String("cluster-resource-namespace", "kube-system", "namespace of ClusterIssuer Secrets")
	namespace := fs.String("namespace", "", "watch only this namespace (all when empty)")
	controllers := fs.String("controllers", "*", "comma-separated controller names, or * for every one built in")
	leaderElect := fs.Bool("leader-elect", false, "accepted for cert-manager's flag set; only false is supported")
	qps := fs.Float64("kube-api-qps", 20, "client QPS when the apiserver has no API Priority and Fairness")
	burst := fs.Int("kube-api-burst", 50, "client burst when the apiserver has no API Priority and Fairness")
	workers := fs.Int("workers", 5, "workers per controller (cert-manager's own default)")
	readyAddress := fs.String("ready-address", "", "serve /readyz here (host:port); 200 once every informer has synced")
	if err := fs.Parse(os.Args[1:]); err != nil {
		return err
	}
	if *leaderElect {
		return fmt.Errorf("--leader-elect=true is not supported by this build")
	}

	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	ctx = logf.NewContext(ctx, klog.Background(), "controller")

	enabled, err := selectControllers(*controllers)
	if err != nil {
		return err
	}

	factory, err := controllerpkg.NewContextFactory(ctx, controllerpkg.ContextOptions{
		Kubeconfig:         *kubeconfig,
		KubernetesAPIQPS:   float32(*qps),
		KubernetesAPIBurst: *burst,
		Namespace:          *namespace,
		IssuerOptions: controllerpkg.IssuerOptions{
			ClusterResourceNamespace: *clusterNS,
		},
		IngressShimOptions: controllerpkg.IngressShimOptions{
			DefaultIssuerKind:  "Issuer",
			DefaultIssuerGroup: "cert-manager.io",
		},
		CertificateOptions: controllerpkg.CertificateOptions{
			CertificateRequestMinimumBackoffDuration: time.Hour,
			CertificateRequestMaximumBackoffDuration: 32 * time.Hour,
		},
		SchedulerOptions: controllerpkg.SchedulerOptions{MaxConcurrentChallenges: 60},
	})
	if err != nil {
		return err
	}

	// Constructors register their informers on the shared factories, so every controller
	// is built before the factories start.
	loops := make(map[string]controllerpkg.Interface, len(enabled))
	for _, name := range enabled {
		loop, err := controllerpkg.Known()[name](factory)
		if err != nil {
			return fmt.Errorf("building controller %s: %w", name, err)
		}
		loops[name] = loop
	}
	shared, err := factory.Build()
	if err != nil {
		return err
	}
	shared.SharedInformerFactory.Start(ctx.Done())
	shared.KubeSharedInformerFactory.Start(ctx.Done())
	if *readyAddress != "" {
		if err := serveReady(ctx, *readyAddress, shared); err != nil {
			return err
		}
	}

	klog.InfoS("starting controllers", "controllers", enabled)
	var wg sync.WaitGroup
	errs := make(chan error, len(loops))
	for name, loop := range loops {
		wg.Go(func() {
			if err := loop.Run(*workers, ctx); err != nil {
				errs <- fmt.Errorf("controller %s: %w", name, err)
				stop()
			}
		})
	}
	wg.Wait()
	close(errs)
	return <-errs
}

// selectControllers resolves the --controllers list against what this binary registered,
// so a misspelt name fails at start rather than silently running nothing.
func selectControllers(spec string) ([]string, error) {
	known := make([]string, 0, len(controllerpkg.Known()))
	for name := range controllerpkg.Known() {
		known = append(known, name)
	}
	slices.Sort(known)
	if spec == "*" {
		return known, nil
	}
	var picked []string
	for _, name := range strings.Split(spec, ",") {
		name = strings.TrimSpace(name)
		if name == "" {
			continue
		}
		if !slices.Contains(known, name) {
			return nil, fmt.Errorf("unknown controller %q (built in: %s)", name, strings.Join(known, ","))
		}
		picked = append(picked, name)
	}
	return picked, nil
}

// serveReady answers /readyz with 200 once the shared informers have synced: callers that
// time cert-manager (the benchmark) start the clock when it can act, not when it was spawned.
func serveReady(ctx context.Context, address string, shared *controllerpkg.Context) error {
	listener, err := net.Listen("tcp", address)
	if err != nil {
		return err
	}
	var synced atomic.Bool
	go func() {
		shared.SharedInformerFactory.WaitForCacheSync(ctx.Done())
		shared.KubeSharedInformerFactory.WaitForCacheSync(ctx.Done())
		synced.Store(ctx.Err() == nil)
		klog.InfoS("informers synced")
	}()
	mux := http.NewServeMux()
	mux.HandleFunc("/readyz", func(w http.ResponseWriter, _ *http.Request) {
		if !synced.Load() {
			http.Error(w, "informers not synced", http.StatusServiceUnavailable)
			return
		}
		fmt.Fprintln(w, "ok")
	})
	server := &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}
	go func() {
		if err := server.Serve(listener); err != nil && !errors.Is(err, http.ErrServerClosed) {
			klog.ErrorS(err, "ready endpoint stopped")
		}
	}()
	go func() {
		<-ctx.Done()
		_ = server.Close()
	}()
	return nil
}
