package main

// etcdretry.go is how the etcd store tells a cluster it cannot reach from
// one that answered, and how a write survives the first: sent again while
// an election runs, read back when its answer was lost.

import (
	"bytes"
	"context"
	"errors"
	"strings"
	"time"

	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

const (
	// etcdRetryPause is the wait between attempts of a write the cluster
	// could not answer: short against an election, long enough not to
	// spin on a cluster that is down.
	etcdRetryPause = 100 * time.Millisecond
	// etcdAttemptTimeout bounds one attempt of such a write: twice an
	// election at etcd's default timeout, so that a write sent to a
	// member dying under it is sent again within etcdOpTimeout.
	etcdAttemptTimeout = 2 * time.Second
)

// Unreachable reports whether err means the cluster could not be reached
// or could not answer in time (no leader, no quorum, a member down): the
// cases that another server, or a moment later, may not share.
func (s *EtcdStore) Unreachable(err error) bool {
	if errors.Is(err, context.DeadlineExceeded) || errors.Is(err, context.Canceled) {
		return true
	}
	code := status.Code(err)
	var ee rpctypes.EtcdError
	if errors.As(err, &ee) {
		code = ee.Code()
	}
	if code == codes.Unavailable || code == codes.DeadlineExceeded {
		return true
	}
	// A member that is stopping answers with its raft's error, which
	// reaches the client as code Unknown: another member can serve.
	return code == codes.Unknown && strings.Contains(err.Error(), "raft: stopped")
}

// commit runs a compare-and-write transaction of name's account, and runs
// it again while the cluster cannot answer (a leader election, a member
// gone), until etcdOpTimeout: an election takes about etcd's election
// timeout, a second by default, so a write made during one waits for it
// instead of failing at once. An attempt that failed (or ran out of its
// etcdAttemptTimeout) may have committed
// all the same; if a later attempt's compare then fails, or the last
// attempt fails too, landed reads the key back to tell. val is what the
// transaction writes (nil for a delete). ok is whether it took effect.
func (s *EtcdStore) commit(name string, val []byte, txn func(context.Context) (*clientv3.TxnResponse, error)) (ok bool, err error) {
	ctx, cancel := s.ctx()
	defer cancel()
	uncertain := false
	for {
		// Each attempt has a part of the time: one sent to a member that
		// is dying can hang until the member is gone.
		actx, acancel := context.WithTimeout(ctx, etcdAttemptTimeout)
		resp, err := txn(actx)
		acancel()
		switch {
		case err == nil && resp.Succeeded:
			s.wrote(name, val, resp.Header.Revision)
			return true, nil
		case err == nil:
			return uncertain && s.landed(name, val), nil
		case !s.Unreachable(err) || ctx.Err() != nil:
			if s.Unreachable(err) && s.landed(name, val) {
				return true, nil
			}
			return false, err
		}
		uncertain = true
		select {
		case <-ctx.Done():
		case <-time.After(etcdRetryPause):
		}
	}
}

// landed reads back, once and briefly, a write whose answer was lost (a
// timeout, a member gone mid-request): etcd may have committed it anyway,
// and a client told BUSY would then find its new name taken, or its old
// password still asked for. val is what was written (nil for a delete);
// each write carries a fresh identity stamp and time, so equal bytes mean
// this write.
func (s *EtcdStore) landed(name string, val []byte) bool {
	ctx, cancel := context.WithTimeout(context.Background(), etcdPingTimeout)
	defer cancel()
	resp, err := s.cli.Get(ctx, s.userKey(name))
	if err != nil {
		return false
	}
	if val == nil {
		if len(resp.Kvs) == 0 {
			s.wrote(name, nil, resp.Header.Revision)
			return true
		}
		return false
	}
	if len(resp.Kvs) == 1 && bytes.Equal(resp.Kvs[0].Value, val) {
		s.wrote(name, val, resp.Kvs[0].ModRevision)
		return true
	}
	return false
}
