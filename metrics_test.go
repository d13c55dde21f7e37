package main

import (
	"bufio"
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
	"github.com/xdg-go/scram"
)

// startMetrics starts a plain-TCP test server with a management listener
// on a loopback port; both stop in t.Cleanup.
func startMetrics(t *testing.T, cfg Config) (*testServer, string) {
	t.Helper()
	cfg.MetricsListen = "127.0.0.1:0"
	ts := startServer(t, cfg)
	m, err := ListenManagement(cfg.MetricsListen, ts.Server, slog.New(newLogHandler(ts.logs, false)))
	if err != nil {
		t.Fatal(err)
	}
	// Registered after startServer's cleanup, so it runs first: the
	// management listener must not outlive the test.
	t.Cleanup(func() { m.Shutdown(context.Background()) })
	return ts, "http://" + m.Addr().String()
}

// sample is one scrape: "name{label=value,...}" → value, labels sorted
// as the exposition format writes them.
type sample map[string]float64

func scrape(t *testing.T, base string) (sample, string) {
	t.Helper()
	resp, err := http.Get(base + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("GET /metrics: %v %d", err, resp.StatusCode)
	}
	parser := expfmt.NewTextParser(model.UTF8Validation)
	families, err := parser.TextToMetricFamilies(strings.NewReader(string(body)))
	if err != nil {
		t.Fatalf("the scrape does not parse: %v\n%s", err, body)
	}
	out := sample{}
	for name, f := range families {
		for _, m := range f.Metric {
			key := name
			if len(m.Label) > 0 {
				var l []string
				for _, p := range m.Label {
					l = append(l, p.GetName()+"="+p.GetValue())
				}
				key += "{" + strings.Join(l, ",") + "}"
			}
			out[key] = value(f.GetType(), m)
		}
	}
	return out, string(body)
}

// value is a counter's or gauge's value, or a histogram's count.
func value(typ dto.MetricType, m *dto.Metric) float64 {
	switch typ {
	case dto.MetricType_COUNTER:
		return m.GetCounter().GetValue()
	case dto.MetricType_GAUGE:
		return m.GetGauge().GetValue()
	case dto.MetricType_HISTOGRAM:
		return float64(m.GetHistogram().GetSampleCount())
	}
	return m.GetUntyped().GetValue()
}

func get(t *testing.T, url string) (int, string) {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, strings.TrimSpace(string(body))
}

func TestMetricsCountWhatHappened(t *testing.T) {
	cfg := testConfig(t)
	cfg.UserFailures = 3
	// Room for a few closed connections the server has not yet seen end.
	cfg.MaxConnsPerSource = 4
	ts, base := startMetrics(t, cfg)
	before, _ := scrape(t, base)

	dials := 0
	mustRegister(t, ts.addr, "alice", "Secret123") // ok
	dials++
	rc, _ := dialRaw(t, ts.addr) // a second REGISTER: taken, charged once
	dials++
	if got := rc.do("REGISTER alice"); !strings.HasPrefix(got, "ERR EXISTS") {
		t.Fatalf("REGISTER of a taken name: %q", got)
	}
	if got := rc.do("REGISTER bad name"); !strings.HasPrefix(got, "ERR BADREQ") { // error
		t.Fatalf("REGISTER with two names: %q", got)
	}
	rc.nc.Close()
	if err := login(t, ts.addr, "alice", "Secret123"); err != nil { // ok
		t.Fatal(err)
	}
	dials++
	for range 2 { // auth twice: with the EXISTS, the pair's 3 are spent
		if err := login(t, ts.addr, "alice", "Wrong1234"); code(err) != CodeAuth {
			t.Fatalf("wrong password: %v", err)
		}
		dials++
	}
	if err := login(t, ts.addr, "alice", "Secret123"); code(err) != CodeLimit { // limit (pair)
		t.Fatalf("after three failures: %v", err)
	}
	dials++
	rc, _ = dialRaw(t, ts.addr)
	dials++
	if got := rc.do("AUTH NOPE-MECH abc"); !strings.HasPrefix(got, "ERR NOMECH") { // other/error
		t.Fatalf("unknown mechanism: %q", got)
	}
	rc.nc.Close()
	// Four connections held open, then a fifth from the same source: BUSY.
	// From a source of their own, which the closes above cannot race.
	for range cfg.MaxConnsPerSource {
		rawFrom(t, ts.addr, "127.0.0.2")
	}
	_, line := rawFrom(t, ts.addr, "127.0.0.2")
	dials += cfg.MaxConnsPerSource + 1
	if !strings.HasPrefix(line, "ERR BUSY") {
		t.Fatalf("one connection over the cap: %q", line)
	}

	after, text := scrape(t, base)
	deltas := map[string]float64{
		`authbox_registrations_total{outcome=ok}`:                       1,
		`authbox_registrations_total{outcome=exists}`:                   1,
		`authbox_registrations_total{outcome=error}`:                    1,
		`authbox_registrations_total{outcome=limit}`:                    0,
		`authbox_registrations_total{outcome=closed}`:                   0,
		`authbox_logins_total{mechanism=SCRAM-SHA-256,outcome=ok}`:      1,
		`authbox_logins_total{mechanism=SCRAM-SHA-256,outcome=auth}`:    2,
		`authbox_logins_total{mechanism=SCRAM-SHA-256,outcome=limit}`:   1,
		`authbox_logins_total{mechanism=SCRAM-SHA-256,outcome=locked}`:  0,
		`authbox_logins_total{mechanism=SCRAM-SHA-256,outcome=error}`:   0,
		`authbox_logins_total{mechanism=other,outcome=error}`:           1,
		`authbox_logins_total{mechanism=SCRAM-SHA-256-PLUS,outcome=ok}`: 0,
		`authbox_throttle_refusals_total{kind=pair}`:                    1,
		`authbox_throttle_refusals_total{kind=source}`:                  0,
		`authbox_connections_accepted_total`:                            float64(dials),
		`authbox_connections_refused_total{reason=source_cap}`:          1,
		`authbox_connections_refused_total{reason=queue_full}`:          0,
		// ok + 2 auth; a throttled AUTH never started a login.
		`authbox_login_duration_seconds`:                      3,
		`authbox_channel_binding_mismatches_total`:            0,
		`authbox_password_changes_total{outcome=ok}`:          0,
		`authbox_store_errors_total{op=get}`:                  0,
		`authbox_store_operation_duration_seconds{op=create}`: 1,
	}
	for k, w := range deltas {
		if got, ok := after[k]; !ok {
			t.Errorf("%s is missing from the scrape", k)
		} else if got-before[k] != w {
			t.Errorf("%s went up by %v, want %v", k, got-before[k], w)
		}
	}
	for k, w := range map[string]float64{
		`authbox_throttle_entries{kind=pair}`:   1,
		`authbox_throttle_entries{kind=source}`: 1,
		`authbox_queue_capacity`:                float64(cfg.Queue),
		`authbox_workers`:                       float64(cfg.Workers),
		`authbox_build_info{goversion=` + runtime.Version() + `,store=bbolt,version=` + version() + `}`: 1,
	} {
		if got, ok := after[k]; !ok || got != w {
			t.Errorf("%s = %v (present %v), want %v", k, got, ok, w)
		}
	}
	// Logins and gets: the scrape shows reads, each login one at least.
	if n := after[`authbox_store_operation_duration_seconds{op=get}`]; n < 4 {
		t.Errorf("store gets counted: %v, want at least one per login", n)
	}
	for _, secret := range []string{"alice", "127.0.0.1", "127.0.0.2", "Secret123"} {
		if strings.Contains(text, secret) {
			t.Errorf("the scrape carries %q", secret)
		}
	}
}

func TestMetricsPasswordsAndChannelBinding(t *testing.T) {
	cfg := tlsTestConfig(t)
	ts, base := startMetrics(t, cfg)
	fp := ts.fingerprint()
	if err := dialPinned(t, ts.addr, fp).Register("bob", "Secret123"); err != nil {
		t.Fatal(err)
	}
	cl := dialPinned(t, ts.addr, fp)
	if err := cl.Login("bob", "Secret123"); err != nil {
		t.Fatal(err)
	}
	if err := cl.Passwd("bob", "Better456"); err != nil {
		t.Fatal(err)
	}
	// A second session of bob's, ended by the change the first one makes.
	other := dialPinned(t, ts.addr, fp)
	if err := other.Login("bob", "Better456"); err != nil {
		t.Fatal(err)
	}
	if err := cl.Passwd("bob", "Third789x"); err != nil {
		t.Fatal(err)
	}
	if err := other.Passwd("bob", "Fourth012"); code(err) != CodeAuth {
		t.Fatalf("PASSWD from an ended session: %v", err)
	}
	// A PLUS login bound to another channel: what a relay's client sends.
	rc, _, _ := dialRawTLS(t, ts.addr)
	sc, err := scramClient("bob", "Third789x")
	if err != nil {
		t.Fatal(err)
	}
	conv := sc.NewConversationWithChannelBinding(scram.ChannelBinding{Type: scram.ChannelBindingTLSExporter, Data: make([]byte, 32)})
	c1, _ := conv.Step("")
	ch := rc.do("AUTH SCRAM-SHA-256-PLUS " + EncodeB64([]byte(c1)))
	s1, err := DecodeB64(strings.TrimPrefix(ch, "CHALLENGE "))
	if err != nil {
		t.Fatalf("AUTH: %q", ch)
	}
	c2, err := conv.Step(string(s1))
	if err != nil {
		t.Fatal(err)
	}
	if got := rc.do("RESPONSE " + EncodeB64([]byte(c2))); !strings.HasPrefix(got, "ERR AUTH") {
		t.Fatalf("a login bound to another channel: %q", got)
	}
	after, _ := scrape(t, base)
	for k, w := range map[string]float64{
		`authbox_logins_total{mechanism=SCRAM-SHA-256-PLUS,outcome=auth}`: 1,
		`authbox_logins_total{mechanism=SCRAM-SHA-256-PLUS,outcome=ok}`:   2,
		`authbox_password_changes_total{outcome=ok}`:                      2,
		`authbox_password_changes_total{outcome=ended}`:                   1,
		`authbox_channel_binding_mismatches_total`:                        1,
	} {
		if after[k] != w {
			t.Errorf("%s = %v, want %v", k, after[k], w)
		}
	}
}

func TestReadyzFollowsShutdownAndStore(t *testing.T) {
	cfg := testConfig(t)
	ts, base := startMetrics(t, cfg)
	if code, body := get(t, base+"/readyz"); code != http.StatusOK || body != "ok" {
		t.Fatalf("/readyz of a running server: %d %q", code, body)
	}
	// An exchange under way holds Shutdown until it ends.
	rc, _ := dialRaw(t, ts.addr)
	if got := rc.do("REGISTER carol"); !strings.HasPrefix(got, "SALT ") {
		t.Fatalf("REGISTER: %q", got)
	}
	stopped := make(chan error, 1)
	go func() { stopped <- ts.Shutdown(context.Background()) }()
	deadline := time.Now().Add(10 * time.Second)
	for {
		code, body := get(t, base+"/readyz")
		if code == http.StatusServiceUnavailable {
			if body != "shutting down" {
				t.Errorf("/readyz while shutting down says %q", body)
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("/readyz still %d %q after Shutdown began", code, body)
		}
		select {
		case err := <-stopped:
			t.Fatalf("Shutdown returned (%v) with an exchange under way", err)
		default:
		}
	}
	if code, _ := get(t, base+"/livez"); code != http.StatusOK {
		t.Errorf("/livez while draining: %d", code)
	}
	if got := rc.do("QUIT"); got != "OK BYE" {
		t.Errorf("QUIT while shutting down: %q", got)
	}
	if err := <-stopped; err != nil {
		t.Fatal(err)
	}
	ts.store.Close()
	if code, body := get(t, base+"/readyz"); code != http.StatusServiceUnavailable || !strings.HasPrefix(body, "shutting down") {
		t.Errorf("/readyz after shutdown: %d %q", code, body)
	}
	// The store's own state, apart from shutdown.
	srv := NewServer(cfg, ts.store, nil)
	if r := srv.notReady(); !strings.HasPrefix(r, "store unavailable") {
		t.Errorf("a server whose store is closed is ready: %q", r)
	}
}

func TestManagementOnlyWhenConfigured(t *testing.T) {
	if DefaultConfig().MetricsListen != "" {
		t.Fatal("the management listener is on by default")
	}
	cfg := testConfig(t)
	ts := startServer(t, cfg)
	if ts.met != nil {
		t.Error("a server without metrics_listen keeps metrics")
	}
	if _, err := ListenManagement("127.0.0.1:0", ts.Server, slog.Default()); err == nil {
		t.Error("a management listener started for a server without metrics")
	}

	dir := t.TempDir()
	s := serveInProcess(t, dir, "--config", writeConfig(t, dir, `metrics_listen = "127.0.0.1:0"`+"\ndb = \"a.db\"\n"))
	if !strings.Contains(s.log.String(), "msg=\"management listener\"") {
		t.Errorf("serve with metrics_listen logged no management listener:\n%s", s.log)
	}
	s.stop(t)
	plain := serveInProcess(t, dir, "--db", "b.db")
	if strings.Contains(plain.log.String(), "management") {
		t.Errorf("serve without metrics_listen started a management listener:\n%s", plain.log)
	}
}

func TestMetricsListenConfig(t *testing.T) {
	for _, tc := range []struct{ toml, want string }{
		{`metrics_listen = "nope"`, "key metrics_listen"},
		{`metrics_listen = "127.0.0.1:7886"`, "must differ from listen"},
		{`log_format = "xml"`, "key log_format"},
	} {
		path := filepath.Join(t.TempDir(), "auth.toml")
		if err := os.WriteFile(path, []byte(tc.toml+"\n"), 0o600); err != nil {
			t.Fatal(err)
		}
		if _, err := LoadConfig(path); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: %v, want %q", tc.toml, err, tc.want)
		}
	}
}

func TestJSONLogsParseLineByLine(t *testing.T) {
	dir := t.TempDir()
	s := serveInProcess(t, dir, "--config", writeConfig(t, dir, `log_format = "json"`+"\ntls = false\n"))
	mustRegister(t, s.addr, "dave", "Secret123")
	if err := login(t, s.addr, "dave", "Wrong1234"); code(err) != CodeAuth {
		t.Fatal(err)
	}
	if code := s.stop(t); code != 0 {
		t.Fatalf("serve exited %d", code)
	}
	msgs := map[string]bool{}
	sc := bufio.NewScanner(strings.NewReader(s.log.String()))
	for sc.Scan() {
		var line map[string]any
		if err := json.Unmarshal(sc.Bytes(), &line); err != nil {
			t.Fatalf("a log line is not JSON: %v\n%s", err, sc.Text())
		}
		msg, _ := line["msg"].(string)
		msgs[msg] = true
	}
	for _, m := range []string{"listening", "registered", "login failed", "connection closed", "stopped cleanly"} {
		if !msgs[m] {
			t.Errorf("no JSON line with msg %q:\n%s", m, s.log)
		}
	}
}

// BenchmarkMetricsPerLogin is what metrics add to one login on the server:
// the store read timed, the login counted and its latency observed.
func BenchmarkMetricsPerLogin(b *testing.B) {
	cfg := testConfig(b)
	cfg.MetricsListen = "127.0.0.1:0"
	srv := NewServer(cfg, benchStore(b, 1), nil)
	m := srv.met
	b.ReportAllocs()
	for b.Loop() {
		start := m.now()
		m.storeDone("get", start, false)
		m.loginDone(MechPlus, outcomeOK, start)
	}
}

// TestMalformedSCRAMResponseCountsItsMechanism: a RESPONSE that ends a
// SCRAM exchange in an error is counted as an error of that exchange's
// mechanism, as the same error at AUTH is, not as a mechanism the server
// does not offer.
func TestMalformedSCRAMResponseCountsItsMechanism(t *testing.T) {
	ts, base := startMetrics(t, testConfig(t))
	mustRegister(t, ts.addr, "alice", "Secret123")
	rc, _ := dialRaw(t, ts.addr)
	before, _ := scrape(t, base)
	if got := rc.do("AUTH SCRAM-SHA-256 " + EncodeB64([]byte("n,,n=alice,r=abcdefghijklmnop"))); !strings.HasPrefix(got, "CHALLENGE ") {
		t.Fatalf("AUTH: %q", got)
	}
	if got := rc.do("RESPONSE not-base64"); !strings.HasPrefix(got, "ERR BADREQ") {
		t.Fatalf("a RESPONSE that is not base64: %q", got)
	}
	after, _ := scrape(t, base)
	for k, w := range map[string]float64{
		`authbox_logins_total{mechanism=SCRAM-SHA-256,outcome=error}`: 1,
		`authbox_logins_total{mechanism=other,outcome=error}`:         0,
	} {
		if got := after[k] - before[k]; got != w {
			t.Errorf("%s went up by %v, want %v", k, got, w)
		}
	}
}
