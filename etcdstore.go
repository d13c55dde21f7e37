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
// Every write is a transaction committed by a quorum before it returns;
// every read is linearizable (a quorum read), so a change made through
// one server is what the next login anywhere reads: nothing is cached.

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
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
)

var (
	// ErrNotEmpty is returned when loading a db into an etcd prefix that
	// already holds another store's accounts.
	ErrNotEmpty = errors.New("the etcd prefix already holds another store's accounts")
	// ErrContended is returned when an account kept changing under an
	// update that compares and retries.
	ErrContended = errors.New("the account kept changing; try again")
)

// EtcdConfig is the [etcd] table of auth.toml.
type EtcdConfig struct {
	Endpoints    []string `toml:"endpoints"`
	Prefix       string   `toml:"prefix"`
	DialTimeout  Duration `toml:"dial_timeout"`
	Username     string   `toml:"username"`
	PasswordFile string   `toml:"password_file"`
	CertFile     string   `toml:"cert_file"`
	KeyFile      string   `toml:"key_file"`
	CAFile       string   `toml:"ca_file"`
}

// validate checks the table; bad is Config.Validate's reporter.
func (e *EtcdConfig) validate(bad func(key, format string, args ...any)) {
	if len(e.Endpoints) == 0 {
		bad("etcd.endpoints", "must list at least one etcd member (host:port or URL) with store = \"etcd\"")
	}
	if e.Prefix == "" || !strings.HasSuffix(e.Prefix, "/") {
		bad("etcd.prefix", "must end in \"/\", got %q", e.Prefix)
	}
	if e.DialTimeout.Duration <= 0 {
		bad("etcd.dial_timeout", "must be positive, got %s", e.DialTimeout)
	}
	if (e.CertFile == "") != (e.KeyFile == "") {
		bad("etcd.cert_file", "etcd.cert_file and etcd.key_file go together: give both or neither")
	}
	if (e.Username == "") != (e.PasswordFile == "") {
		bad("etcd.username", "etcd.username and etcd.password_file go together: give both or neither")
	}
}

// EtcdStore is the account store on etcd.
type EtcdStore struct {
	cli    *clientv3.Client
	prefix string
	desc   string
	secret []byte
	// tally counts the legacy salts by shape, as the bbolt store does,
	// but only as imports and loads add them: it is read at open and kept
	// in meta/legacy_salts, and upgrades and deletes do not subtract (the
	// proportion it gives, not the count, is what shapes a fake salt).
	tallyMu sync.Mutex
	tally   saltTally
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

// etcdTLS is the client TLS for etcd's own transport.
func etcdTLS(cfg EtcdConfig) (*tls.Config, error) {
	tc := &tls.Config{MinVersion: tls.VersionTLS12}
	if cfg.CAFile != "" {
		pem, err := os.ReadFile(cfg.CAFile)
		if err != nil {
			return nil, fmt.Errorf("etcd.ca_file: %w", err)
		}
		tc.RootCAs = x509.NewCertPool()
		if !tc.RootCAs.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("etcd.ca_file %s: no PEM certificate in it", cfg.CAFile)
		}
	}
	if cfg.CertFile != "" {
		pair, err := tls.LoadX509KeyPair(cfg.CertFile, cfg.KeyFile)
		if err != nil {
			return nil, fmt.Errorf("etcd.cert_file/key_file: %w", err)
		}
		tc.Certificates = []tls.Certificate{pair}
	}
	return tc, nil
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
	s.secret = vals["secret"]
	ctx, cancel := s.ctx()
	defer cancel()
	resp, err := s.cli.Get(ctx, s.metaKey("legacy_salts"))
	if err != nil {
		return err
	}
	if len(resp.Kvs) == 1 {
		s.tally, _ = decodeTally(resp.Kvs[0].Value)
	}
	return nil
}

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
			s.tallyMu.Lock()
			s.tally = t
			s.tallyMu.Unlock()
			return nil
		}
	}
	return ErrContended
}

// FakeLegacySalt is fakeLegacySalt in the cluster's proportion.
func (s *EtcdStore) FakeLegacySalt(mac []byte) string {
	s.tallyMu.Lock()
	t := s.tally
	s.tallyMu.Unlock()
	return fakeLegacySalt(mac, t)
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

// Describe names the cluster and the prefix.
func (s *EtcdStore) Describe() string { return s.desc }

// Ping is a quorum read: it fails when the cluster has no leader.
func (s *EtcdStore) Ping() error {
	ctx, cancel := context.WithTimeout(context.Background(), etcdPingTimeout)
	defer cancel()
	_, err := s.cli.Get(ctx, s.metaKey("schema"), clientv3.WithCountOnly())
	return err
}

// Close stops the cache and closes the client; the cluster's data stays.
func (s *EtcdStore) Close() error {
	s.stopCache()
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
	ctx, cancel := s.ctx()
	defer cancel()
	k := s.userKey(name)
	val := rec.marshal()
	resp, err := s.cli.Txn(ctx).If(clientv3.Compare(clientv3.CreateRevision(k), "=", 0)).
		Then(clientv3.OpPut(k, string(val))).Commit()
	if err != nil {
		return err
	}
	if !resp.Succeeded {
		return ErrExists
	}
	s.wrote(name, val, resp.Header.Revision)
	return nil
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
	ctx, cancel := s.ctx()
	defer cancel()
	resp, err := s.cli.Txn(ctx).If(clientv3.Compare(clientv3.ModRevision(s.userKey(name)), "=", rev)).Then(op).Commit()
	if err != nil {
		return false, err
	}
	if resp.Succeeded {
		s.wrote(name, val, resp.Header.Revision)
	}
	return resp.Succeeded, nil
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
		if err != nil {
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
	return writeDBFile(w, s.secret, cert, key, s.eachRaw)
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

// FakeSalt is fakeSalt under the cluster's secret: every server gives an
// unknown name the same challenge.
func (s *EtcdStore) FakeSalt(label, name string) []byte {
	return fakeSalt(s.secret, label, name)
}

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
	if n > 0 && !bytes.Equal(s.secret, src.secret) {
		return 0, 0, ErrNotEmpty
	}
	if !bytes.Equal(s.secret, src.secret) {
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
		s.secret = bytes.Clone(src.secret)
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
