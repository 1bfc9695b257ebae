package main

import (
	"bufio"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"flag"
	"fmt"
	"net"
	"strings"
	"time"
)

func runClient(args []string) error {
	flags := flag.NewFlagSet("client", flag.ExitOnError)
	identity := identityFlags(flags)
	trust := flags.String("trust", "", "PEM file of the CA certificates the server must chain to")
	connect := flags.String("connect", "127.0.0.1:8443", "server address")
	expect := flags.String("expect", "", "the SPIFFE ID the server must have")
	interval := flags.Duration("interval", 200*time.Millisecond, "pause between handshakes")
	status := flags.String("status", "", "address of the JSON status endpoint (off if empty)")
	_ = flags.Parse(args)
	f, err := identity(*trust)
	if err != nil {
		return err
	}
	rep := newReport()
	if err := rep.serve(*status); err != nil {
		return err
	}
	fmt.Printf("calling %s every %s, expecting %s\n", *connect, *interval, *expect)
	for {
		peer, peerSerial, own, digest, err := exchange(f, *connect, *expect)
		if err != nil {
			rep.failure(peer, err)
		} else {
			rep.success(peer, own, peerSerial, digest)
		}
		time.Sleep(*interval)
	}
}

// exchange is one complete conversation. With TLS 1.3 the client finishes its handshake
// before the server has judged the client certificate, so only the server's greeting proves
// that the server accepted us.
func exchange(f files, address, expect string) (peer, peerSerial, own, digest string, err error) {
	config := &tls.Config{
		MinVersion:         tls.VersionTLS12,
		InsecureSkipVerify: true, // replaced by VerifyPeerCertificate: SPIFFE IDs, not host names
		GetClientCertificate: func(*tls.CertificateRequestInfo) (*tls.Certificate, error) {
			cert, err := f.certificate()
			if err == nil {
				own = serial(cert.Leaf)
			}
			return cert, err
		},
		VerifyPeerCertificate: func(raw [][]byte, _ [][]*x509.Certificate) error {
			id, leaf, err := f.verifyPeer(raw, x509.ExtKeyUsageServerAuth)
			peer, peerSerial = id, serial(leaf)
			if err != nil {
				return err
			}
			if id != expect {
				return fmt.Errorf("unexpected server identity %s, wanted %s", id, expect)
			}
			_, digest, _ = f.roots()
			return nil
		},
	}
	dialer := &net.Dialer{Timeout: 5 * time.Second}
	conn, err := tls.DialWithDialer(dialer, "tcp", address, config)
	if err != nil {
		return peer, peerSerial, own, digest, err
	}
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(10 * time.Second))
	line, err := bufio.NewReader(conn).ReadString('\n')
	if err != nil {
		return peer, peerSerial, own, digest, fmt.Errorf("server closed without greeting: %w", err)
	}
	if !strings.HasPrefix(line, "hello ") {
		return peer, peerSerial, own, digest, errors.New("unexpected greeting " + line)
	}
	_, err = fmt.Fprintln(conn, "bye")
	return peer, peerSerial, own, digest, err
}
