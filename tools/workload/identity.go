package main

import (
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"time"
)

// files names where the identity and the trust anchors live. They are read again for every
// handshake: the kubelet swaps a Secret volume's files atomically (a `..data` symlink to a
// fresh folder), so a renewed certificate is in use from the first handshake after the swap,
// without watching anything or restarting.
type files struct {
	identity string // folder with tls.crt and tls.key
	trust    string // PEM file of the CA certificates to verify peers with
}

// snapshot resolves the folder's `..data` link once, so tls.crt and tls.key come from the
// same version of the volume even when the kubelet swaps it between the two reads.
func snapshot(folder string) string {
	if target, err := filepath.EvalSymlinks(filepath.Join(folder, "..data")); err == nil {
		return target
	}
	return folder
}

// certificate loads the current key pair, retrying briefly: a swap between resolving the
// link and reading the files removes the old folder.
func (f files) certificate() (*tls.Certificate, error) {
	var last error
	for attempt := 0; attempt < 5; attempt++ {
		dir := snapshot(f.identity)
		pair, err := tls.LoadX509KeyPair(filepath.Join(dir, "tls.crt"), filepath.Join(dir, "tls.key"))
		if err == nil {
			pair.Leaf, err = x509.ParseCertificate(pair.Certificate[0])
			if err == nil {
				return &pair, nil
			}
		}
		last = err
		time.Sleep(50 * time.Millisecond)
	}
	return nil, fmt.Errorf("loading identity from %s: %w", f.identity, last)
}

// roots loads the trust anchors and a fingerprint of them, so a test can tell which bundle
// the workload verified with.
func (f files) roots() (*x509.CertPool, string, error) {
	data, err := os.ReadFile(f.trust)
	if err != nil {
		return nil, "", err
	}
	pool := x509.NewCertPool()
	digest := sha256.New()
	count := 0
	for rest := data; ; {
		var block *pem.Block
		block, rest = pem.Decode(rest)
		if block == nil {
			break
		}
		cert, err := x509.ParseCertificate(block.Bytes)
		if err != nil {
			return nil, "", err
		}
		pool.AddCert(cert)
		digest.Write(block.Bytes)
		count++
	}
	if count == 0 {
		return nil, "", errors.New("no certificates in " + f.trust)
	}
	return pool, hex.EncodeToString(digest.Sum(nil)), nil
}

// verifyPeer checks the peer's chain against the current trust anchors and returns its
// SPIFFE ID (the certificate's only URI SAN, as the X509-SVID spec requires).
func (f files) verifyPeer(raw [][]byte, usage x509.ExtKeyUsage) (string, *x509.Certificate, error) {
	if len(raw) == 0 {
		return "", nil, errors.New("peer sent no certificate")
	}
	certs := make([]*x509.Certificate, len(raw))
	for i, der := range raw {
		cert, err := x509.ParseCertificate(der)
		if err != nil {
			return "", nil, err
		}
		certs[i] = cert
	}
	roots, _, err := f.roots()
	if err != nil {
		return "", nil, err
	}
	intermediates := x509.NewCertPool()
	for _, cert := range certs[1:] {
		intermediates.AddCert(cert)
	}
	leaf := certs[0]
	if _, err := leaf.Verify(x509.VerifyOptions{
		Roots: roots, Intermediates: intermediates, KeyUsages: []x509.ExtKeyUsage{usage},
	}); err != nil {
		return "", leaf, err
	}
	if len(leaf.URIs) != 1 || leaf.URIs[0].Scheme != "spiffe" {
		return "", leaf, errors.New("peer certificate is not an X509-SVID")
	}
	return leaf.URIs[0].String(), leaf, nil
}

func serial(cert *x509.Certificate) string {
	if cert == nil {
		return ""
	}
	return cert.SerialNumber.Text(16)
}
