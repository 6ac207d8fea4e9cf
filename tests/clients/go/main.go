// The Go client (github.com/twmb/franz-go, the version go.mod pins), driven by
// tests/e2e/test_client_matrix.py. Same commands and the same one-line JSON answer as the Java
// driver (tests/clients/java/ClientCheck.java), so that one test asserts on every client:
//
//	admin BOOTSTRAP GOOD_TOPIC BAD_TOPIC        create (3 partitions), describe, refused create, delete
//	produce BOOTSTRAP TOPIC PARTITION VALUE...  one idempotent acks=all producer, each send awaited
//	produce-spread BOOTSTRAP TOPIC N V1..VN L1..LN  value i to partition i in one request (a value
//	                                            "nokey:..." without a key), then L1..LN the same way
//	consume BOOTSTRAP TOPIC GROUP PROTOCOL N    a group member reads N, commits each (PROTOCOL: classic)
//	txn BOOTSTRAP TOPIC TXN_ID                  commit 3 records, abort 3, a refused one, read_committed
//	addresses BOOTSTRAP TOPIC                   every broker and leader address the client learns
package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"
)

type obj = map[string]any

func main() {
	out, err := run(os.Args[1:])
	if err != nil {
		emit(obj{"fatal": fmt.Sprintf("%T", err), "message": err.Error()})
		os.Exit(1)
	}
	emit(out)
}

func emit(o obj) {
	b, _ := json.Marshal(o)
	fmt.Println(string(b))
}

func run(a []string) (obj, error) {
	switch a[0] {
	case "admin":
		return admin(a[1], a[2], a[3])
	case "produce":
		p, _ := strconv.Atoi(a[3])
		return produce(a[1], a[2], int32(p), a[4:])
	case "produce-spread":
		n, _ := strconv.Atoi(a[3])
		return produceSpread(a[1], a[2], a[4:4+n], a[4+n:4+2*n])
	case "consume":
		n, _ := strconv.Atoi(a[5])
		return consume(a[1], a[2], a[3], n)
	case "txn":
		return txn(a[1], a[2], a[3])
	case "addresses":
		return addresses(a[1], a[2])
	}
	return nil, fmt.Errorf("unknown command %q", a[0])
}

// ctx is a deadline for one step. The timer is released when it fires; the process is short.
func ctx(d time.Duration) context.Context {
	c, cancel := context.WithTimeout(context.Background(), d)
	time.AfterFunc(d, cancel)
	return c
}

func client(bootstrap string, opts ...kgo.Opt) (*kgo.Client, error) {
	base := []kgo.Opt{
		kgo.SeedBrokers(strings.Split(bootstrap, ",")...),
		kgo.RequestTimeoutOverhead(15 * time.Second),
		kgo.RecordDeliveryTimeout(30 * time.Second),
		kgo.ProducerLinger(0),
		kgo.RecordPartitioner(kgo.ManualPartitioner()),
	}
	return kgo.NewClient(append(base, opts...)...)
}

// describe is what franz-go shows its user for a failed record: the error's type, its Kafka
// code name when it is one, and its text.
func describe(err error) obj {
	o := obj{"ok": false, "error": fmt.Sprintf("%T", err), "message": err.Error()}
	var ke *kerr.Error
	if errors.As(err, &ke) {
		o["error"] = ke.Message
	}
	return o
}

func admin(bootstrap, good, bad string) (obj, error) {
	cl, err := client(bootstrap)
	if err != nil {
		return nil, err
	}
	defer cl.Close()
	adm := kadm.NewClient(cl)
	r := obj{}
	resp, err := adm.CreateTopic(ctx(30*time.Second), 3, 1, nil, good)
	if err == nil {
		err = resp.Err
	}
	if err != nil {
		return nil, fmt.Errorf("create %s: %w", good, err)
	}
	r["created"] = true
	details, err := adm.ListTopics(ctx(30*time.Second), good)
	if err != nil {
		return nil, err
	}
	r["partitions"] = len(details[good].Partitions)
	badResp, err := adm.CreateTopic(ctx(30*time.Second), 3, 1, nil, bad)
	if err == nil {
		err = badResp.Err
	}
	if err != nil {
		var ke *kerr.Error
		if errors.As(err, &ke) {
			r["bad_error"] = ke.Message
		} else {
			r["bad_error"] = fmt.Sprintf("%T", err)
		}
		r["bad_message"] = badResp.ErrMessage
	} else {
		r["bad_error"] = nil
	}
	del, err := adm.DeleteTopics(ctx(30*time.Second), good)
	if err == nil {
		err = del.Error()
	}
	if err != nil {
		return nil, fmt.Errorf("delete %s: %w", good, err)
	}
	r["deleted"] = true
	return r, nil
}

func outcome(r kgo.ProduceResult) obj {
	if r.Err != nil {
		return describe(r.Err)
	}
	return obj{"ok": true, "partition": r.Record.Partition, "offset": r.Record.Offset}
}

func record(topic string, partition int32, key, value string) *kgo.Record {
	r := &kgo.Record{Topic: topic, Partition: partition, Value: []byte(value)}
	if key != "" {
		r.Key = []byte(key)
	}
	return r
}

// franz-go's producer is idempotent with acks=all by default; both are stated for the reader.
func producer(bootstrap string, opts ...kgo.Opt) (*kgo.Client, error) {
	return client(bootstrap, append([]kgo.Opt{kgo.RequiredAcks(kgo.AllISRAcks())}, opts...)...)
}

func produce(bootstrap, topic string, partition int32, values []string) (obj, error) {
	cl, err := producer(bootstrap)
	if err != nil {
		return nil, err
	}
	defer cl.Close()
	results := []obj{}
	for _, v := range values {
		res := cl.ProduceSync(ctx(40*time.Second), record(topic, partition, "k", v))
		results = append(results, outcome(res[0]))
	}
	return obj{"results": results}, nil
}

// sendSpread sends values[i] to partition i, all in flight together so that the linger puts
// them in one request, and waits for each.
func sendSpread(cl *kgo.Client, topic string, values []string) []obj {
	out := make([]obj, len(values))
	done := make(chan struct{}, len(values))
	for i, v := range values {
		key := "key"
		if strings.HasPrefix(v, "nokey:") {
			key = ""
		}
		i := i
		cl.Produce(ctx(40*time.Second), record(topic, int32(i), key, v), func(r *kgo.Record, err error) {
			out[i] = outcome(kgo.ProduceResult{Record: r, Err: err})
			done <- struct{}{}
		})
	}
	for range values {
		<-done
	}
	return out
}

func produceSpread(bootstrap, topic string, values, later []string) (obj, error) {
	cl, err := producer(bootstrap, kgo.ProducerLinger(500*time.Millisecond))
	if err != nil {
		return nil, err
	}
	defer cl.Close()
	first := sendSpread(cl, topic, values)
	return obj{"results": first, "later": sendSpread(cl, topic, later)}, nil
}

func consume(bootstrap, topic, group string, n int) (obj, error) {
	cl, err := client(bootstrap,
		kgo.ConsumerGroup(group),
		kgo.ConsumeTopics(topic),
		kgo.DisableAutoCommit(),
		kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()),
		kgo.SessionTimeout(10*time.Second),
		kgo.HeartbeatInterval(time.Second),
	)
	if err != nil {
		return nil, err
	}
	defer cl.Close()
	values := []string{}
	end := time.Now().Add(45 * time.Second)
	for len(values) < n && time.Now().Before(end) {
		fs := cl.PollFetches(ctx(time.Second))
		for _, e := range fs.Errors() {
			if !errors.Is(e.Err, context.DeadlineExceeded) && !errors.Is(e.Err, context.Canceled) {
				return nil, e.Err
			}
		}
		for _, r := range fs.Records() {
			if len(values) < n {
				values = append(values, string(r.Value))
				if err := cl.CommitRecords(ctx(15*time.Second), r); err != nil {
					return nil, fmt.Errorf("commit: %w", err)
				}
			}
		}
	}
	// Settle: anything more than asked for would show here (it is not committed).
	extra := 0
	settle := time.Now().Add(1500 * time.Millisecond)
	for time.Now().Before(settle) {
		extra += len(cl.PollFetches(ctx(300 * time.Millisecond)).Records())
	}
	return obj{"values": values, "extra_seen": extra}, nil
}

func order(id string, total float64) string {
	return fmt.Sprintf(`{"order_id": "%s", "customer_id": "c", "order_total": %v}`, id, total)
}

func txn(bootstrap, topic, txnID string) (obj, error) {
	r := obj{}
	cl, err := producer(bootstrap, kgo.TransactionalID(txnID))
	if err != nil {
		return nil, err
	}
	defer cl.Close()
	send := func(recs ...*kgo.Record) error {
		return cl.ProduceSync(ctx(40*time.Second), recs...).FirstErr()
	}
	end := func(commit kgo.TransactionEndTry) error {
		return cl.EndTransaction(ctx(30*time.Second), commit)
	}
	batch := func(prefix string) []*kgo.Record {
		var recs []*kgo.Record
		for i := 0; i < 3; i++ {
			recs = append(recs, record(topic, 0, "k", order(fmt.Sprintf("%s-%d", prefix, i), 10)))
		}
		return recs
	}
	for _, step := range []struct {
		prefix string
		commit kgo.TransactionEndTry
	}{{"committed", kgo.TryCommit}, {"aborted", kgo.TryAbort}} {
		if err := cl.BeginTransaction(); err != nil {
			return nil, err
		}
		if err := send(batch(step.prefix)...); err != nil {
			return nil, fmt.Errorf("%s: %w", step.prefix, err)
		}
		if err := end(step.commit); err != nil {
			return nil, fmt.Errorf("end %s: %w", step.prefix, err)
		}
	}
	// A transaction with a record the contract refuses: the producer sees the refusal and
	// aborts; a commit must not succeed.
	if err := cl.BeginTransaction(); err != nil {
		return nil, err
	}
	refused := send(record(topic, 1, "k", order("refused-txn-good", 10)),
		record(topic, 0, "k", order("refused-txn-bad", 0)))
	if refused != nil {
		r["refused_commit"] = fmt.Sprintf("%T: %v", refused, refused)
		if err := end(kgo.TryAbort); err != nil {
			return nil, fmt.Errorf("abort after refusal: %w", err)
		}
	} else {
		r["refused_commit"] = nil
		if err := end(kgo.TryCommit); err != nil {
			r["refused_commit"] = err.Error()
		}
	}
	if err := cl.BeginTransaction(); err != nil {
		return nil, err
	}
	if err := send(record(topic, 0, "k", order("after-0", 10))); err != nil {
		return nil, fmt.Errorf("after: %w", err)
	}
	if err := end(kgo.TryCommit); err != nil {
		return nil, fmt.Errorf("end after: %w", err)
	}
	cl.Close()

	c, err := client(bootstrap,
		kgo.ConsumeTopics(topic),
		kgo.FetchIsolationLevel(kgo.ReadCommitted()),
		kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()),
	)
	if err != nil {
		return nil, err
	}
	defer c.Close()
	values := []string{}
	deadline := time.Now().Add(20 * time.Second)
	for len(values) < 4 && time.Now().Before(deadline) {
		for _, rec := range c.PollFetches(ctx(500 * time.Millisecond)).Records() {
			values = append(values, string(rec.Value))
		}
	}
	settle := time.Now().Add(1500 * time.Millisecond)
	for time.Now().Before(settle) {
		for _, rec := range c.PollFetches(ctx(300 * time.Millisecond)).Records() {
			values = append(values, string(rec.Value))
		}
	}
	r["read_committed"] = values
	return r, nil
}

// dialHook records every broker address the client connects to.
type dialHook struct {
	mu   sync.Mutex
	seen map[string]bool
}

func (h *dialHook) OnBrokerConnect(meta kgo.BrokerMetadata, _ time.Duration, _ net.Conn, _ error) {
	h.mu.Lock()
	h.seen[fmt.Sprintf("%s:%d", meta.Host, meta.Port)] = true
	h.mu.Unlock()
}

func addresses(bootstrap, topic string) (obj, error) {
	dialed := &dialHook{seen: map[string]bool{}}
	cl, err := client(bootstrap, kgo.WithHooks(dialed))
	if err != nil {
		return nil, err
	}
	defer cl.Close()
	md, err := kadm.NewClient(cl).Metadata(ctx(30*time.Second), topic)
	if err != nil {
		return nil, err
	}
	seen := map[string]bool{}
	for _, b := range md.Brokers {
		seen[fmt.Sprintf("%s:%d", b.Host, b.Port)] = true
	}
	byID := map[int32]string{}
	for _, b := range md.Brokers {
		byID[b.NodeID] = fmt.Sprintf("%s:%d", b.Host, b.Port)
	}
	for _, p := range md.Topics[topic].Partitions {
		if addr, ok := byID[p.Leader]; ok {
			seen[addr] = true
		}
	}
	// Produce to every partition, so the client dials each leader it was told of.
	for _, p := range md.Topics[topic].Partitions {
		cl.ProduceSync(ctx(30*time.Second), record(topic, p.Partition, "k", order("addresses", 10)))
	}
	// Every address the client itself dialed, beyond what the admin answer listed.
	dialed.mu.Lock()
	for a := range dialed.seen {
		seen[a] = true
	}
	dialed.mu.Unlock()
	list := []string{}
	for a := range seen {
		list = append(list, a)
	}
	return obj{"addresses": list}, nil
}
