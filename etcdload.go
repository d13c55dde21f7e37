package main

// etcdload.go moves a bbolt db into an etcd prefix ("authbox restore"),
// keeping what makes it the same service: its accounts as they are, the
// secret behind unknown names' fake salts, and the TLS identity.

import (
	"bytes"

	clientv3 "go.etcd.io/etcd/client/v3"
)

// Load copies a bbolt store into this prefix: its secret (so unknown
// names keep their fake salts), its TLS identity (so clients' pins hold)
// and every account as it is, identity stamps included. The prefix must
// hold no accounts, or be an unfinished load of this same db: a digest of
// the db is kept in meta/restore from the start of a load to its end, so
// that running it again finishes the job, while another db, or this one
// again after the load finished (an account deleted since would come
// back), is refused with ErrNotEmpty. A name the db holds that was
// registered in the prefix during the load keeps the prefix's account and
// is returned in clashed.
func (s *EtcdStore) Load(src *Store) (res LoadResult, err error) {
	digest, err := src.digest()
	if err != nil {
		return res, err
	}
	n, err := s.Count()
	if err != nil {
		return res, err
	}
	ctx, cancel := s.ctx()
	marker, err := s.cli.Get(ctx, s.metaKey("restore"))
	cancel()
	if err != nil {
		return res, err
	}
	resuming := len(marker.Kvs) == 1 && bytes.Equal(marker.Kvs[0].Value, digest)
	if n > 0 && !resuming {
		return res, ErrNotEmpty
	}
	if !resuming {
		// The secret may change, and a load begin, only while the prefix
		// holds no account: the compare covers the whole users range, so
		// a registration racing the start fails it instead of being left
		// under a secret it was not made with.
		ctx, cancel := s.ctx()
		noUsers := clientv3.Compare(clientv3.CreateRevision(s.prefix+"users/"), "=", 0).WithPrefix()
		resp, err := s.cli.Txn(ctx).If(noUsers).Then(
			clientv3.OpPut(s.metaKey("secret"), string(src.secret)),
			clientv3.OpPut(s.metaKey("restore"), string(digest))).Commit()
		cancel()
		if err != nil {
			return res, err
		}
		if !resp.Succeeded {
			return res, ErrNotEmpty
		}
		s.setSecret(bytes.Clone(src.secret))
	}
	cert, key, err := src.storedIdentity()
	if err != nil {
		return res, err
	}
	if cert != nil && key != nil {
		ctx, cancel := s.ctx()
		_, err := s.cli.Txn(ctx).Then(clientv3.OpPut(s.metaKey("tls_cert"), string(cert)), clientv3.OpPut(s.metaKey("tls_key"), string(key))).Commit()
		cancel()
		if err != nil {
			return res, err
		}
	}
	var chunk []NamedRecord
	flush := func() error {
		made, err := s.loadChunk(chunk, &res)
		if err == nil {
			err = s.addTally(made)
		}
		res.Loaded += len(made)
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
	if err != nil {
		return res, err
	}
	// Done: from now on the prefix is the cluster's, not a load's.
	ctx, cancel = s.ctx()
	defer cancel()
	_, err = s.cli.Txn(ctx).If(clientv3.Compare(clientv3.Value(s.metaKey("restore")), "=", string(digest))).
		Then(clientv3.OpDelete(s.metaKey("restore"))).Commit()
	return res, err
}

// LoadResult is what a Load did: accounts written, accounts found written
// by an earlier run of the same load, and names registered in the prefix
// meanwhile, whose accounts were kept instead of the db's.
type LoadResult struct {
	Loaded, Kept int
	Clashed      []string
}

// loadChunk writes records as they are (stamps and times kept), skipping
// names already there: counted as kept when the record there is the db's
// own (same identity stamp), as clashed otherwise. A name registered
// between the check and the write makes the write fail, and the chunk is
// checked again.
func (s *EtcdStore) loadChunk(recs []NamedRecord, res *LoadResult) (made []NamedRecord, err error) {
	for range etcdRetries {
		gens, err := s.existingGens(recs)
		if err != nil {
			return nil, err
		}
		var cmps []clientv3.Cmp
		var puts []clientv3.Op
		made = made[:0]
		kept, clashed := 0, []string(nil)
		for _, nr := range recs {
			if gen, ok := gens[nr.Name]; ok {
				if gen == nr.Record.Gen {
					kept++
				} else {
					clashed = append(clashed, nr.Name)
				}
				continue
			}
			k := s.userKey(nr.Name)
			cmps = append(cmps, clientv3.Compare(clientv3.CreateRevision(k), "=", 0))
			puts = append(puts, clientv3.OpPut(k, string(nr.Record.marshal())))
			made = append(made, nr)
		}
		if len(puts) > 0 {
			ctx, cancel := s.ctx()
			resp, err := s.cli.Txn(ctx).If(cmps...).Then(puts...).Commit()
			cancel()
			if err != nil {
				return nil, err
			}
			if !resp.Succeeded {
				continue
			}
		}
		res.Kept += kept
		res.Clashed = append(res.Clashed, clashed...)
		return made, nil
	}
	return nil, ErrContended
}

// existingGens reads which of recs' names exist, with the identity stamp
// of each (0 for a record that does not decode).
func (s *EtcdStore) existingGens(recs []NamedRecord) (map[string]uint64, error) {
	ops := make([]clientv3.Op, len(recs))
	for i, nr := range recs {
		ops[i] = clientv3.OpGet(s.userKey(nr.Name))
	}
	ctx, cancel := s.ctx()
	defer cancel()
	resp, err := s.cli.Txn(ctx).Then(ops...).Commit()
	if err != nil {
		return nil, err
	}
	out := map[string]uint64{}
	for i, r := range resp.Responses {
		if kvs := r.GetResponseRange().Kvs; len(kvs) > 0 {
			rec, _ := unmarshalRecord(kvs[0].Value)
			out[recs[i].Name] = rec.Gen
		}
	}
	return out, nil
}
