package main

import (
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"
)

// files names where the identity and the trust anchors live. They are read again for every
// handshake: the kubelet swaps a Secret or projected volume's files atomically (a `..data`
// symlink to a fresh folder), so a renewed certificate is in use from the first handshake
// after the swap, without watching anything or restarting.
type files struct {
	identity string // folder with tls.crt and tls.key (a Secret volume), or ""
	bundle   string // a podCertificate credential bundle: key, then chain (leaf first), or ""
	trust    string // PEM file of the CA certificates to verify peers with
}

// identityFlags registers the two ways of naming the workload's own key and certificate
// and returns a constructor that checks exactly one was given.
func identityFlags(flags *flag.FlagSet) func(trust string) (files, error) {
	identity := flags.String("identity", "", "folder holding tls.crt and tls.key")
	bundle := flags.String("bundle", "", "credential bundle file: PEM private key, then the certificate chain (leaf first)")
	return func(trust string) (files, error) {
		if (*identity == "") == (*bundle == "") {
			return files{}, errors.New("give exactly one of --identity and --bundle")
		}
		if trust == "" {
			return files{}, errors.New("--trust is required")
		}
		return files{identity: *identity, bundle: *bundle, trust: trust}, nil
	}
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
	source := f.identity
	if f.bundle != "" {
		source = f.bundle
	}
	var last error
	for attempt := 0; attempt < 5; attempt++ {
		pair, err := f.load()
		if err == nil {
			pair.Leaf, err = x509.ParseCertificate(pair.Certificate[0])
			if err == nil {
				return &pair, nil
			}
		}
		last = err
		time.Sleep(50 * time.Millisecond)
	}
	return nil, fmt.Errorf("loading identity from %s: %w", source, last)
}

// load reads one version of the key pair. A bundle is a single file, so one read is one
// version by construction; a folder's two files are read through one resolved `..data`.
func (f files) load() (tls.Certificate, error) {
	if f.bundle == "" {
		dir := snapshot(f.identity)
		return tls.LoadX509KeyPair(filepath.Join(dir, "tls.crt"), filepath.Join(dir, "tls.key"))
	}
	data, err := os.ReadFile(f.bundle)
	if err != nil {
		return tls.Certificate{}, err
	}
	return splitBundle(data)
}

// splitBundle turns the kubelet's credential bundle (a PKCS#8 "PRIVATE KEY" block, then
// "CERTIFICATE" blocks, leaf first) into a key pair; tls.X509KeyPair checks that the key
// belongs to the leaf.
func splitBundle(data []byte) (tls.Certificate, error) {
	var keyPEM, chainPEM []byte
	for rest := data; ; {
		var block *pem.Block
		block, rest = pem.Decode(rest)
		if block == nil {
			break
		}
		switch {
		case block.Type == "CERTIFICATE":
			chainPEM = append(chainPEM, pem.EncodeToMemory(block)...)
		case strings.HasSuffix(block.Type, "PRIVATE KEY") && keyPEM == nil:
			keyPEM = pem.EncodeToMemory(block)
		default:
			return tls.Certificate{}, fmt.Errorf("unexpected %q block in credential bundle", block.Type)
		}
	}
	if keyPEM == nil || chainPEM == nil {
		return tls.Certificate{}, errors.New("credential bundle needs a private key and a certificate")
	}
	return tls.X509KeyPair(chainPEM, keyPEM)
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
