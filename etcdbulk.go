package main

// etcdbulk.go is the etcd store's bulk writes: an import in transactions
// of etcdTxnOps accounts, and the count of legacy salt shapes they keep.

import (
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
)

// addTally adds the legacy salts of recs to the cluster's count,
// comparing on its revision as Update does.
func (s *EtcdStore) addTally(recs []NamedRecord) error {
	var d saltTally
	for _, nr := range recs {
		d.add(nr.Record, 1)
	}
	if d == (saltTally{}) {
		return nil
	}
	key := s.metaKey("legacy_salts")
	for range etcdRetries {
		ctx, cancel := s.ctx()
		resp, err := s.cli.Get(ctx, key)
		cancel()
		if err != nil {
			return err
		}
		var t saltTally
		var rev int64
		if len(resp.Kvs) == 1 {
			t, _ = decodeTally(resp.Kvs[0].Value)
			rev = resp.Kvs[0].ModRevision
		}
		t.dashed += d.dashed
		t.plain += d.plain
		ctx, cancel = s.ctx()
		put, err := s.cli.Txn(ctx).If(clientv3.Compare(clientv3.ModRevision(key), "=", rev)).Then(clientv3.OpPut(key, string(t.encode()))).Commit()
		cancel()
		if err != nil {
			return err
		}
		if put.Succeeded {
			s.metaChanged("legacy_salts", t.encode())
			return nil
		}
	}
	return ErrContended
}

// CreateMany writes accounts in transactions of etcdTxnOps, each all or
// nothing; a failure part way leaves the transactions before it written
// and reports how many (see the import's note on etcd). Without replace,
// a name that exists is skipped, and one that appears meanwhile fails the
// transaction, which is then retried with it skipped.
func (s *EtcdStore) CreateMany(recs []NamedRecord, replace bool) (created, skipped int, err error) {
	now := time.Now()
	for len(recs) > 0 {
		n := min(len(recs), etcdTxnOps)
		made, sk, err := s.createChunk(recs[:n], replace, now)
		created, skipped = created+len(made), skipped+sk
		if err == nil {
			err = s.addTally(made)
		}
		if err != nil {
			return created, skipped, err
		}
		recs = recs[n:]
	}
	return created, skipped, nil
}

func (s *EtcdStore) createChunk(recs []NamedRecord, replace bool, now time.Time) (made []NamedRecord, skipped int, err error) {
	for range etcdRetries {
		var exists map[string]bool
		if !replace {
			if exists, err = s.existing(recs); err != nil {
				return nil, 0, err
			}
		}
		var cmps []clientv3.Cmp
		var puts []clientv3.Op
		made, skipped = nil, 0
		for _, nr := range recs {
			k := s.userKey(nr.Name)
			if exists[nr.Name] {
				skipped++
				continue
			}
			rec := nr.Record
			if rec.Created.IsZero() {
				rec.Created = now
			}
			if rec.Updated.IsZero() {
				rec.Updated = now
			}
			rec.Gen = NewGen()
			if !replace {
				cmps = append(cmps, clientv3.Compare(clientv3.CreateRevision(k), "=", 0))
			}
			puts = append(puts, clientv3.OpPut(k, string(rec.marshal())))
			made = append(made, NamedRecord{nr.Name, rec})
		}
		if len(puts) == 0 {
			return nil, skipped, nil
		}
		ctx, cancel := s.ctx()
		resp, err := s.cli.Txn(ctx).If(cmps...).Then(puts...).Commit()
		cancel()
		if err != nil {
			return nil, 0, err
		}
		if resp.Succeeded {
			for _, nr := range made {
				s.wrote(nr.Name, nr.Record.marshal(), resp.Header.Revision)
			}
			return made, skipped, nil
		}
	}
	return nil, 0, ErrContended
}

// existing says which of recs' names have an account, in one read.
func (s *EtcdStore) existing(recs []NamedRecord) (map[string]bool, error) {
	ops := make([]clientv3.Op, len(recs))
	for i, nr := range recs {
		ops[i] = clientv3.OpGet(s.userKey(nr.Name), clientv3.WithKeysOnly())
	}
	ctx, cancel := s.ctx()
	defer cancel()
	resp, err := s.cli.Txn(ctx).Then(ops...).Commit()
	if err != nil {
		return nil, err
	}
	out := map[string]bool{}
	for i, r := range resp.Responses {
		if len(r.GetResponseRange().Kvs) > 0 {
			out[recs[i].Name] = true
		}
	}
	return out, nil
}
