package main

import (
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"sync"
	"time"
)

// report is what the status endpoint serves: counts rather than a log to parse, so a test
// can wait for "one more successful handshake than before" and know that none failed.
type report struct {
	mu          sync.Mutex
	OK          int            `json:"ok"`
	Failed      int            `json:"failed"`
	LastError   string         `json:"lastError"`
	Peers       map[string]int `json:"peers"`
	Refused     map[string]int `json:"refused"`
	OwnSerials  []string       `json:"ownSerials"`
	PeerSerials []string       `json:"peerSerials"`
	Trust       string         `json:"trustSHA256"`
}

func newReport() *report {
	return &report{Peers: map[string]int{}, Refused: map[string]int{}}
}

func appendNew(list []string, value string) []string {
	if value == "" || (len(list) > 0 && list[len(list)-1] == value) {
		return list
	}
	return append(list, value)
}

// success records a completed exchange; it logs only what changed (a new peer or a new
// certificate on either side), so the log of a long-running pod stays readable.
func (r *report) success(peer, own, peerSerial, trust string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	changed := r.Peers[peer] == 0 ||
		len(r.OwnSerials) == 0 || r.OwnSerials[len(r.OwnSerials)-1] != own ||
		len(r.PeerSerials) == 0 || r.PeerSerials[len(r.PeerSerials)-1] != peerSerial
	r.OK++
	r.Peers[peer]++
	r.OwnSerials = appendNew(r.OwnSerials, own)
	r.PeerSerials = appendNew(r.PeerSerials, peerSerial)
	r.Trust = trust
	if changed {
		fmt.Printf("%s handshake ok peer=%s own-serial=%s peer-serial=%s (ok=%d failed=%d)\n",
			time.Now().UTC().Format(time.RFC3339), peer, own, peerSerial, r.OK, r.Failed)
	}
}

func (r *report) failure(peer string, err error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.Failed++
	r.LastError = err.Error()
	if peer != "" {
		r.Refused[peer]++
	}
	fmt.Printf("%s handshake failed peer=%q: %v (ok=%d failed=%d)\n",
		time.Now().UTC().Format(time.RFC3339), peer, err, r.OK, r.Failed)
}

func (r *report) serve(address string) error {
	if address == "" {
		return nil
	}
	listener, err := net.Listen("tcp", address)
	if err != nil {
		return err
	}
	mux := http.NewServeMux()
	mux.HandleFunc("/status", func(w http.ResponseWriter, _ *http.Request) {
		r.mu.Lock()
		defer r.mu.Unlock()
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(r)
	})
	go func() { _ = http.Serve(listener, mux) }()
	return nil
}
