package main

// etcdstore.go is the account store on an etcd cluster, for several
// servers that are one service. Keys live under a prefix:
//
//	<prefix>users/<name>   a record, in the bbolt store's encoding
//	<prefix>meta/schema    the layout version
//	<prefix>meta/secret    the fake-salt secret, made once per cluster
//	<prefix>meta/tls_cert  the self-made TLS identity, made once per
//	<prefix>meta/tls_key   cluster, so every server has one fingerprint
//
// Every write is a transaction committed by a quorum before it returns.
// Every read is linearizable (a quorum read), except a server's logins,
// which read its cache while it is known current (etcdcache.go).

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"
)

const (
	// etcdOpTimeout bounds one request to etcd. A leader election takes
	// about one election timeout (1 s by default), so a request under way
	// during one still gets through; a store that stays unreachable
	// fails the login well within the client's line timeout (10 s).
	etcdOpTimeout = 5 * time.Second
	// etcdTxnOps is how many accounts one bulk transaction writes. etcd
	// refuses a transaction of more than 128 operations (its
	// max-txn-ops default) and a request over 1.5 MiB; 100 records of
	// about 130 bytes stay well inside both.
	etcdTxnOps = 100
	// etcdPage is how many accounts one read of Each fetches.
	etcdPage = 1000
	// etcdRetries bounds the compare-and-retry loop of Update and
	// DeleteIf: a key that changes under every one of them is being
	// fought over, and the caller hears so.
	etcdRetries = 16
	// etcdPingTimeout bounds the health probe: twice etcd's default
	// election timeout, so that an election alone does not mark the store
	// down, while a dead cluster is noticed within a few seconds.
	etcdPingTimeout = 2 * time.Second
	// etcdKeepAlive and etcdKeepAliveTimeout: see OpenEtcd. A member
	// gone silent is dropped about 7 s after its last answer.
	etcdKeepAlive        = 5 * time.Second
	etcdKeepAliveTimeout = 2 * time.Second
)

var (
	// ErrNotEmpty is returned when loading a db into an etcd prefix that
	// already holds another store's accounts.
	ErrNotEmpty = errors.New("the etcd prefix already holds another store's accounts")
	// ErrContended is returned when an account kept changing under an
	// update that compares and retries.
	ErrContended = errors.New("the account kept changing; try again")
)

// EtcdStore is the account store on etcd.
type EtcdStore struct {
	cli    *clientv3.Client
	prefix string
	desc   string
	// metaMu guards secret and tally, which a server's cache keeps
	// current from the watch (a restore replaces the secret, an import
	// on any machine moves the tally), so that every server gives an
	// unknown name the same fake salts.
	metaMu sync.RWMutex
	secret []byte
	// tally counts the legacy salts by shape, as the bbolt store does,
	// but only as imports and loads add them: it is kept in
	// meta/legacy_salts, and upgrades and deletes do not subtract (the
	// proportion it gives, not the count, is what shapes a fake salt).
	tally saltTally
	// cache is the server's copy of the accounts (etcdcache.go); nil in
	// the admin commands, which read etcd itself.
	cache atomic.Pointer[etcdCache]
}

// OpenEtcd connects to the cluster and makes, once for the cluster, what a
// new store needs (the schema and the secret).
func OpenEtcd(cfg EtcdConfig) (*EtcdStore, error) {
	ccfg := clientv3.Config{
		Endpoints:   cfg.Endpoints,
		DialTimeout: cfg.DialTimeout.Duration,
		// The client's own log is zap's, at info: it would interleave
		// with ours. Its errors reach us as returned errors.
		Logger: zap.NewNop(),
		// Keepalive pings find a member that vanished without closing
		// its connections (power lost, a cable pulled): without them the
		// client keeps sending it requests until the kernel gives up on
		// the connection, many minutes later, and a healthy cluster
		// answers BUSY meanwhile. 5 s is the least etcd accepts by
		// default (--grpc-keepalive-min-time); it drops clients that
		// ping more often.
		DialKeepAliveTime:    etcdKeepAlive,
		DialKeepAliveTimeout: etcdKeepAliveTimeout,
		PermitWithoutStream:  true,
	}
	if cfg.PasswordFile != "" {
		pw, err := os.ReadFile(cfg.PasswordFile)
		if err != nil {
			return nil, fmt.Errorf("etcd.password_file: %w", err)
		}
		ccfg.Username, ccfg.Password = cfg.Username, strings.TrimRight(string(pw), "\r\n")
	}
	if cfg.CAFile != "" || cfg.CertFile != "" {
		tc, err := etcdTLS(cfg)
		if err != nil {
			return nil, err
		}
		ccfg.TLS = tc
	}
	cli, err := clientv3.New(ccfg)
	if err != nil {
		return nil, fmt.Errorf("etcd %s: %w", strings.Join(cfg.Endpoints, ","), err)
	}
	s := &EtcdStore{cli: cli, prefix: cfg.Prefix, desc: fmt.Sprintf("etcd %s prefix %s", strings.Join(cfg.Endpoints, ","), cfg.Prefix)}
	if err := s.init(); err != nil {
		cli.Close()
		return nil, fmt.Errorf("%s: %w", s.desc, err)
	}
	return s, nil
}

func (s *EtcdStore) ctx() (context.Context, context.CancelFunc) {
	return context.WithTimeout(context.Background(), etcdOpTimeout)
}

func (s *EtcdStore) userKey(name string) string { return s.prefix + "users/" + name }
func (s *EtcdStore) metaKey(name string) string { return s.prefix + "meta/" + name }

// init makes the schema and the secret if the cluster has none, in one
// transaction that only creates, so that servers starting together agree
// on one secret.
func (s *EtcdStore) init() error {
	secret := make([]byte, sha256.Size)
	if _, err := rand.Read(secret); err != nil {
		return err
	}
	vals, err := s.createOnce(map[string][]byte{"schema": {schemaVersion}, "secret": secret})
	if err != nil {
		return err
	}
	if v := vals["schema"]; len(v) != 1 || v[0] > schemaVersion {
		return ErrBadSchema
	}
	if len(vals["secret"]) != sha256.Size {
		return fmt.Errorf("meta/secret: %w", ErrBadRecord)
	}
	s.setSecret(vals["secret"])
	ctx, cancel := s.ctx()
	defer cancel()
	resp, err := s.cli.Get(ctx, s.metaKey("legacy_salts"))
	if err != nil {
		return err
	}
	if len(resp.Kvs) == 1 {
		s.metaChanged("legacy_salts", resp.Kvs[0].Value)
	}
	return nil
}

// Describe names the cluster and the prefix.
func (s *EtcdStore) Describe() string { return s.desc }

// Ping is a quorum read: it fails when the cluster has no leader.
func (s *EtcdStore) Ping() error { return s.PingContext(context.Background()) }

// PingContext is Ping, given up when parent ends (a server shutting down
// does not wait out a probe of a lost cluster).
func (s *EtcdStore) PingContext(parent context.Context) error {
	ctx, cancel := context.WithTimeout(parent, etcdPingTimeout)
	defer cancel()
	_, err := s.cli.Get(ctx, s.metaKey("schema"), clientv3.WithCountOnly())
	return err
}

// Close stops the cache and closes the client; the cluster's data stays.
func (s *EtcdStore) Close() error {
	s.stopCache(nil)
	return s.cli.Close()
}

// get reads one account and the revision it was last written at.
func (s *EtcdStore) get(name string) (Record, int64, error) {
	ctx, cancel := s.ctx()
	defer cancel()
	resp, err := s.cli.Get(ctx, s.userKey(name))
	if err != nil {
		return Record{}, 0, err
	}
	if len(resp.Kvs) == 0 {
		return Record{}, 0, ErrNotFound
	}
	rec, err := unmarshalRecord(resp.Kvs[0].Value)
	return rec, resp.Kvs[0].ModRevision, err
}

// Get returns the account for a normalized name, or ErrNotFound: from the
// server's cache while it is known current (etcdcache.go), else from etcd.
func (s *EtcdStore) Get(name string) (Record, error) {
	if c := s.cache.Load(); c != nil {
		if val, found, ok := c.get(name); ok {
			if !found {
				return Record{}, ErrNotFound
			}
			return unmarshalRecord(val)
		}
	}
	rec, _, err := s.get(name)
	return rec, err
}

// revision is the cluster's current revision, read by quorum.
func (s *EtcdStore) revision(parent context.Context) (int64, error) {
	ctx, cancel := context.WithTimeout(parent, etcdPingTimeout)
	defer cancel()
	resp, err := s.cli.Get(ctx, s.metaKey("schema"), clientv3.WithCountOnly())
	if err != nil {
		return 0, err
	}
	return resp.Header.Revision, nil
}

// wrote tells the cache, if any, of a write this store committed at rev
// (val nil for a delete): a server must read its own writes at once.
func (s *EtcdStore) wrote(name string, val []byte, rev int64) {
	if c := s.cache.Load(); c != nil {
		c.apply(name, val, rev)
	}
}

// Create adds an account only if the name is absent in the whole
// cluster: two servers registering one name at once get one OK.
func (s *EtcdStore) Create(name string, rec Record) error {
	now := time.Now()
	rec.Created, rec.Updated, rec.Gen = now, now, NewGen()
	k := s.userKey(name)
	val := rec.marshal()
	ok, err := s.commit(name, val, func(ctx context.Context) (*clientv3.TxnResponse, error) {
		return s.cli.Txn(ctx).If(clientv3.Compare(clientv3.CreateRevision(k), "=", 0)).
			Then(clientv3.OpPut(k, string(val))).Commit()
	})
	if err != nil {
		return err
	}
	if !ok {
		return ErrExists
	}
	return nil
}

// Update compares on the key's revision: fn's answer is written only if
// nobody wrote the account since it was read, else it runs again on the
// newer record. A lock and a password change made at once on two servers
// both take effect, in one order.
func (s *EtcdStore) Update(name string, fn func(Record) (Record, error)) error {
	for range etcdRetries {
		old, rev, err := s.get(name)
		if err != nil {
			return err
		}
		rec, err := fn(old)
		if err != nil {
			return err
		}
		rec.Created, rec.Updated = old.Created, time.Now()
		val := rec.marshal()
		ok, err := s.putIf(name, rev, val, clientv3.OpPut(s.userKey(name), string(val)))
		if err != nil || ok {
			return err
		}
	}
	return ErrContended
}

// putIf runs op, which writes val (nil: deletes), if name's key is still
// at revision rev.
func (s *EtcdStore) putIf(name string, rev int64, val []byte, op clientv3.Op) (bool, error) {
	return s.commit(name, val, func(ctx context.Context) (*clientv3.TxnResponse, error) {
		return s.cli.Txn(ctx).If(clientv3.Compare(clientv3.ModRevision(s.userKey(name)), "=", rev)).Then(op).Commit()
	})
}

// SetLocked locks or unlocks an account; it reports whether it changed.
func (s *EtcdStore) SetLocked(name string, locked bool) (bool, error) {
	return setLocked(s, name, locked)
}

// Delete removes an account, or returns ErrNotFound.
func (s *EtcdStore) Delete(name string) error { return s.DeleteIf(name, nil) }

// DeleteIf removes an account if ok approves the record as it is when the
// delete commits (compared on its revision, as Update).
func (s *EtcdStore) DeleteIf(name string, ok func(Record) error) error {
	for range etcdRetries {
		rec, rev, err := s.get(name)
		// A plain delete removes a record that does not decode too, as
		// the bbolt store does: it is the way to clear one.
		if err != nil && (ok != nil || rev == 0) {
			return err
		}
		if ok != nil {
			if err := ok(rec); err != nil {
				return err
			}
		}
		done, err := s.putIf(name, rev, nil, clientv3.OpDelete(s.userKey(name)))
		if err != nil || done {
			return err
		}
	}
	return ErrContended
}

// DeletePrefix removes every account whose name begins with prefix in one
// request, which etcd applies atomically.
func (s *EtcdStore) DeletePrefix(prefix string) (int, error) {
	if prefix == "" {
		return 0, errors.New("an empty prefix would delete every account")
	}
	ctx, cancel := s.ctx()
	defer cancel()
	resp, err := s.cli.Delete(ctx, s.userKey(prefix), clientv3.WithPrefix(), clientv3.WithPrevKV())
	if err != nil {
		return 0, err
	}
	for _, kv := range resp.PrevKvs {
		s.wrote(strings.TrimPrefix(string(kv.Key), s.prefix+"users/"), nil, resp.Header.Revision)
	}
	return int(resp.Deleted), nil
}

// Count is the number of accounts.
func (s *EtcdStore) Count() (int, error) {
	ctx, cancel := s.ctx()
	defer cancel()
	resp, err := s.cli.Get(ctx, s.prefix+"users/", clientv3.WithPrefix(), clientv3.WithCountOnly())
	if err != nil {
		return 0, err
	}
	return int(resp.Count), nil
}

// Each reads the accounts page by page, every page at the revision of the
// first, so that it sees one consistent store however long it takes (as
// long as etcd has not compacted that revision away).
func (s *EtcdStore) Each(fn func(name string, rec Record) error) error {
	return s.eachRaw(func(name string, val []byte) error {
		rec, err := unmarshalRecord(val)
		if err != nil {
			return fmt.Errorf("account %q: %w", name, err)
		}
		return fn(name, rec)
	})
}

func (s *EtcdStore) eachRaw(fn func(name string, val []byte) error) error {
	_, err := s.eachRawAt(context.Background(), func(name string, val []byte, _ int64) error { return fn(name, val) })
	return err
}

// eachRawAt is eachRaw with each record's revision, and returns the
// revision the whole read was made at.
func (s *EtcdStore) eachRawAt(parent context.Context, fn func(name string, val []byte, mod int64) error) (int64, error) {
	base := s.prefix + "users/"
	end := clientv3.GetPrefixRangeEnd(base)
	from, rev := base, int64(0)
	for {
		ctx, cancel := context.WithTimeout(parent, etcdOpTimeout)
		opts := []clientv3.OpOption{clientv3.WithRange(end), clientv3.WithLimit(etcdPage)}
		if rev != 0 {
			opts = append(opts, clientv3.WithRev(rev))
		}
		resp, err := s.cli.Get(ctx, from, opts...)
		cancel()
		if err != nil {
			return 0, err
		}
		if rev == 0 {
			rev = resp.Header.Revision
		}
		for _, kv := range resp.Kvs {
			if err := fn(strings.TrimPrefix(string(kv.Key), base), kv.Value, kv.ModRevision); err != nil {
				return 0, err
			}
		}
		if !resp.More || len(resp.Kvs) == 0 {
			return rev, nil
		}
		from = string(resp.Kvs[len(resp.Kvs)-1].Key) + "\x00"
	}
}

// Backup writes the cluster's accounts, secret and TLS identity as a bbolt
// db file.
func (s *EtcdStore) Backup(w io.Writer) (int64, error) {
	cert, key, err := s.storedIdentity()
	if err != nil {
		return 0, err
	}
	s.metaMu.RLock()
	secret, tally := s.secret, s.tally
	s.metaMu.RUnlock()
	return writeDBFile(w, secret, cert, key, tally, s.eachRaw)
}
