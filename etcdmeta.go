package main

// etcdmeta.go holds what is made once for a cluster and kept under
// <prefix>meta/: the fake-salt secret and the legacy-salt tally (which a
// server's cache keeps current from its watch) and the TLS identity.

import (
	"bytes"
	"crypto/sha256"
	"fmt"

	clientv3 "go.etcd.io/etcd/client/v3"
)

func (s *EtcdStore) currentSecret() []byte {
	s.metaMu.RLock()
	defer s.metaMu.RUnlock()
	return s.secret
}

func (s *EtcdStore) setSecret(secret []byte) {
	s.metaMu.Lock()
	s.secret = secret
	s.metaMu.Unlock()
}

// metaChanged takes a meta value as stored (nil if deleted): the secret
// and the tally are kept, the rest is read when needed. A value that
// does not decode is ignored: the one held stays, which keeps fake salts
// steady rather than empty.
func (s *EtcdStore) metaChanged(name string, val []byte) {
	switch name {
	case "secret":
		if len(val) == sha256.Size {
			s.setSecret(bytes.Clone(val))
		}
	case "legacy_salts":
		if t, ok := decodeTally(val); ok {
			s.metaMu.Lock()
			s.tally = t
			s.metaMu.Unlock()
		}
	}
}

// FakeLegacySalt is fakeLegacySalt in the cluster's proportion.
func (s *EtcdStore) FakeLegacySalt(mac []byte) string {
	s.metaMu.RLock()
	t := s.tally
	s.metaMu.RUnlock()
	return fakeLegacySalt(mac, t)
}

// FakeSalt is fakeSalt under the cluster's secret: every server gives an
// unknown name the same challenge.
func (s *EtcdStore) FakeSalt(dst []byte, label, name string) []byte {
	return fakeSalt(dst, s.currentSecret(), label, name)
}

// createOnce puts the meta values if none of them exists yet, and returns
// what is stored then: the new values, or those another server made
// first.
func (s *EtcdStore) createOnce(vals map[string][]byte) (map[string][]byte, error) {
	ctx, cancel := s.ctx()
	defer cancel()
	var cmps []clientv3.Cmp
	var puts, gets []clientv3.Op
	var names []string
	for name, v := range vals {
		names = append(names, name)
		cmps = append(cmps, clientv3.Compare(clientv3.CreateRevision(s.metaKey(name)), "=", 0))
		puts = append(puts, clientv3.OpPut(s.metaKey(name), string(v)))
		gets = append(gets, clientv3.OpGet(s.metaKey(name)))
	}
	resp, err := s.cli.Txn(ctx).If(cmps...).Then(puts...).Else(gets...).Commit()
	if err != nil {
		return nil, err
	}
	if resp.Succeeded {
		return vals, nil
	}
	out := map[string][]byte{}
	for i, r := range resp.Responses {
		if kvs := r.GetResponseRange().Kvs; len(kvs) == 1 {
			out[names[i]] = kvs[0].Value
		}
	}
	return out, nil
}

// storedIdentity is the cluster's TLS identity, nil if none was made.
func (s *EtcdStore) storedIdentity() (cert, key []byte, err error) {
	ctx, cancel := s.ctx()
	defer cancel()
	resp, err := s.cli.Txn(ctx).Then(clientv3.OpGet(s.metaKey("tls_cert")), clientv3.OpGet(s.metaKey("tls_key"))).Commit()
	if err != nil {
		return nil, nil, err
	}
	val := func(i int) []byte {
		if kvs := resp.Responses[i].GetResponseRange().Kvs; len(kvs) == 1 {
			return kvs[0].Value
		}
		return nil
	}
	return val(0), val(1), nil
}

// Identity returns the cluster's TLS identity, making it once: servers
// starting together all end up with the one that was stored first.
func (s *EtcdStore) Identity(create func() (cert, key []byte, err error)) (cert, key []byte, err error) {
	cert, key, err = s.storedIdentity()
	if err != nil || (cert != nil && key != nil) {
		return cert, key, err
	}
	newCert, newKey, err := create()
	if err != nil {
		return nil, nil, err
	}
	vals, err := s.createOnce(map[string][]byte{"tls_cert": newCert, "tls_key": newKey})
	if err != nil {
		return nil, nil, err
	}
	if vals["tls_cert"] == nil || vals["tls_key"] == nil {
		return nil, nil, fmt.Errorf("%s: the TLS identity is half there (meta/tls_cert, meta/tls_key)", s.desc)
	}
	return vals["tls_cert"], vals["tls_key"], nil
}
