// Command signet-workload is what the test bed's pods run: a mutual-TLS server or client
// that reads the files Signet's Secrets and trust ConfigMaps put in a volume (--identity
// folder), or the kubelet's podCertificate credential bundle and ClusterTrustBundle
// projection (--bundle file), picks up renewed files without a restart, insists on the
// peer's SPIFFE ID, and reports every handshake (log lines, and JSON on a status endpoint
// the tests read over host networking).
//
// It is also the sandbox ("pause") image of the node: `signet-workload pause` waits for a
// signal, which is all a pod sandbox's first process has to do.
package main

import (
	"fmt"
	"os"
	"os/signal"
	"syscall"
)

func main() {
	if len(os.Args) < 2 {
		fmt.Fprintln(os.Stderr, "usage: signet-workload pause|server|client [flags]")
		os.Exit(2)
	}
	var err error
	switch os.Args[1] {
	case "pause":
		pause()
	case "server":
		err = runServer(os.Args[2:])
	case "client":
		err = runClient(os.Args[2:])
	default:
		err = fmt.Errorf("unknown command %q", os.Args[1])
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "signet-workload:", err)
		os.Exit(1)
	}
}

// pause is the sandbox's process: as PID 1 of its namespaces it only has to live until the
// runtime stops it.
func pause() {
	signals := make(chan os.Signal, 1)
	signal.Notify(signals, syscall.SIGTERM, syscall.SIGINT)
	<-signals
}
