package main

// etcdload.go moves a bbolt db into an etcd prefix ("authbox restore"),
// keeping what makes it the same service: its accounts as they are, the
// secret behind unknown names' fake salts, and the TLS identity.

import (
	"bytes"
	"fmt"

	clientv3 "go.etcd.io/etcd/client/v3"
)

// Load copies a bbolt store into this prefix: its secret (so unknown
// names keep their fake salts), its TLS identity (so clients' pins hold)
// and every account as it is, identity stamps included. The prefix must
// hold no accounts, or be a load of this same db that was interrupted
// (same secret): then the accounts already there are kept and the rest
// are added, so running it again finishes the job.
func (s *EtcdStore) Load(src *Store) (loaded, kept int, err error) {
	n, err := s.Count()
	if err != nil {
		return 0, 0, err
	}
	if n > 0 && !bytes.Equal(s.currentSecret(), src.secret) {
		return 0, 0, ErrNotEmpty
	}
	if !bytes.Equal(s.currentSecret(), src.secret) {
		// The secret may change only while the prefix holds no account:
		// the compare covers the whole users range, so a registration
		// racing the load fails the load instead of being left under a
		// secret it was not made with.
		ctx, cancel := s.ctx()
		noUsers := clientv3.Compare(clientv3.CreateRevision(s.prefix+"users/"), "=", 0).WithPrefix()
		resp, err := s.cli.Txn(ctx).If(noUsers).Then(clientv3.OpPut(s.metaKey("secret"), string(src.secret))).Commit()
		cancel()
		if err != nil {
			return 0, 0, err
		}
		if !resp.Succeeded {
			return 0, 0, ErrNotEmpty
		}
		s.setSecret(bytes.Clone(src.secret))
	}
	cert, key, err := src.storedIdentity()
	if err != nil {
		return 0, 0, err
	}
	if cert != nil && key != nil {
		ctx, cancel := s.ctx()
		_, err := s.cli.Txn(ctx).Then(clientv3.OpPut(s.metaKey("tls_cert"), string(cert)), clientv3.OpPut(s.metaKey("tls_key"), string(key))).Commit()
		cancel()
		if err != nil {
			return 0, 0, err
		}
	}
	var chunk []NamedRecord
	flush := func() error {
		made, k, err := s.loadChunk(chunk)
		if err == nil {
			err = s.addTally(made)
		}
		loaded, kept = loaded+len(made), kept+k
		chunk = chunk[:0]
		return err
	}
	err = src.Each(func(name string, rec Record) error {
		chunk = append(chunk, NamedRecord{name, rec})
		if len(chunk) == etcdTxnOps {
			return flush()
		}
		return nil
	})
	if err == nil && len(chunk) > 0 {
		err = flush()
	}
	return loaded, kept, err
}

// loadChunk writes records as they are (stamps and times kept), skipping
// names already there.
func (s *EtcdStore) loadChunk(recs []NamedRecord) (made []NamedRecord, kept int, err error) {
	exists, err := s.existing(recs)
	if err != nil {
		return nil, 0, err
	}
	var cmps []clientv3.Cmp
	var puts []clientv3.Op
	for _, nr := range recs {
		if exists[nr.Name] {
			kept++
			continue
		}
		k := s.userKey(nr.Name)
		cmps = append(cmps, clientv3.Compare(clientv3.CreateRevision(k), "=", 0))
		puts = append(puts, clientv3.OpPut(k, string(nr.Record.marshal())))
		made = append(made, nr)
	}
	if len(puts) == 0 {
		return nil, kept, nil
	}
	ctx, cancel := s.ctx()
	defer cancel()
	resp, err := s.cli.Txn(ctx).If(cmps...).Then(puts...).Commit()
	if err != nil {
		return nil, kept, err
	}
	if !resp.Succeeded {
		return nil, kept, fmt.Errorf("accounts appeared in the prefix while loading: %w", ErrNotEmpty)
	}
	return made, kept, nil
}
