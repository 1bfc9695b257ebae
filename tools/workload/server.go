package main

import (
	"bufio"
	"crypto/tls"
	"crypto/x509"
	"flag"
	"fmt"
	"net"
	"slices"
	"strings"
	"time"
)

func runServer(args []string) error {
	flags := flag.NewFlagSet("server", flag.ExitOnError)
	identity := identityFlags(flags)
	trust := flags.String("trust", "", "PEM file of the CA certificates clients must chain to")
	listen := flags.String("listen", "127.0.0.1:8443", "address to serve mutual TLS on")
	allow := flags.String("allow", "", "comma-separated SPIFFE IDs allowed to connect")
	status := flags.String("status", "", "address of the JSON status endpoint (off if empty)")
	_ = flags.Parse(args)
	f, err := identity(*trust)
	if err != nil {
		return err
	}
	allowed := strings.Split(*allow, ",")
	rep := newReport()
	if err := rep.serve(*status); err != nil {
		return err
	}
	listener, err := net.Listen("tcp", *listen)
	if err != nil {
		return err
	}
	fmt.Printf("listening on %s, allowing %s\n", listener.Addr(), *allow)
	for {
		conn, err := listener.Accept()
		if err != nil {
			return err
		}
		go serveOne(conn, f, allowed, rep)
	}
}

func serveOne(conn net.Conn, f files, allowed []string, rep *report) {
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(10 * time.Second))
	var peer, peerSerial, own, trustDigest string
	config := &tls.Config{
		MinVersion: tls.VersionTLS12,
		ClientAuth: tls.RequireAnyClientCert, // verified below against the current bundle
		GetCertificate: func(*tls.ClientHelloInfo) (*tls.Certificate, error) {
			cert, err := f.certificate()
			if err == nil {
				own = serial(cert.Leaf)
			}
			return cert, err
		},
		VerifyPeerCertificate: func(raw [][]byte, _ [][]*x509.Certificate) error {
			id, leaf, err := f.verifyPeer(raw, x509.ExtKeyUsageClientAuth)
			peer, peerSerial = id, serial(leaf)
			if err != nil {
				return err
			}
			if !slices.Contains(allowed, id) {
				return fmt.Errorf("refused %s: not an allowed caller", id)
			}
			_, trustDigest, _ = f.roots()
			return nil
		},
	}
	server := tls.Server(conn, config)
	if err := server.Handshake(); err != nil {
		rep.failure(peer, err)
		return
	}
	if _, err := fmt.Fprintf(server, "hello %s from %s\n", peer, own); err != nil {
		rep.failure(peer, err)
		return
	}
	// Wait for the client's goodbye so the exchange is complete on both sides.
	_, _ = bufio.NewReader(server).ReadString('\n')
	rep.success(peer, own, peerSerial, trustDigest)
}
