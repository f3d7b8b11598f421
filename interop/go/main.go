// Command valkeyrie-go drives the Go library (github.com/kvtools/valkeyrie and its stores)
// for the Rust interop tests: each call is one invocation, its results are JSON lines on
// stdout, so a Rust test can act as one service and this program as another.
//
//	valkeyrie-go -store redis|redis-raw|etcdv3|zookeeper|consul -endpoints host:port[,host:port]
//	             [-token T] [-ttl D] [-timeout D] [-count N] [-delete-on-unlock] COMMAND ARGS
//
// Values on the command line and in the output are hex, so binary values pass unchanged.
//
//	put KEY HEX [-ttl D, -hold D]  write; with -hold, keep the connection that long
//	get KEY                        {"key","value","index"}
//	list DIR                       one pair per line, then {"event":"end"}
//	delete KEY
//	atomic-put KEY HEX INDEX|-     compare-and-set on INDEX ("-" creates): {"index"}
//	atomic-delete KEY INDEX
//	lock-hold KEY HEX              lock (waiting), say {"event":"locked"}, hold until stdin
//	                               closes or gives a line, unlock, say {"event":"unlocked"}
//	lock-try KEY HEX               {"event":"locked"} then unlock, or {"event":"busy"} after -timeout
//	                               (Go has no try-lock: this is Lock with a deadline)
//	watch KEY                      {"event":"ready"}, then every pair seen, -count of them
//	watch-tree DIR                 {"event":"ready"}, then every list seen, -count of them
//	bench-prepare KIND DIR         the benchmark's workloads (see bench.go)
//	bench-run KIND DIR
//
// Errors are one line {"error": kind, "message": text} with exit status 1; kind is
// key_modified, key_not_found, key_exists, lost or other.
package main

import (
	"bufio"
	"context"
	"encoding/hex"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/kvtools/consul"
	"github.com/kvtools/etcdv3"
	"github.com/kvtools/redis"
	"github.com/kvtools/valkeyrie"
	"github.com/kvtools/valkeyrie/store"
	"github.com/kvtools/zookeeper"
)

type pair struct {
	Key   string `json:"key"`
	Value string `json:"value"`
	Index uint64 `json:"index"`
}

type options struct {
	store          string
	endpoints      []string
	token          string
	ttl            time.Duration
	hold           time.Duration
	timeout        time.Duration
	count          int
	deleteOnUnlock bool
	bench          benchFlags
}

func main() {
	var opts options
	var endpoints string
	flag.StringVar(&opts.store, "store", "", "redis, redis-raw, etcdv3, zookeeper or consul")
	flag.StringVar(&endpoints, "endpoints", "", "comma-separated host:port list")
	flag.StringVar(&opts.token, "token", "", "Consul ACL token")
	flag.DurationVar(&opts.ttl, "ttl", 0, "TTL of a put or a lock")
	flag.DurationVar(&opts.hold, "hold", 0, "how long put keeps its connection open")
	flag.DurationVar(&opts.timeout, "timeout", 10*time.Second, "how long lock-try waits")
	flag.IntVar(&opts.count, "count", 1, "how many events a watch prints")
	flag.BoolVar(&opts.deleteOnUnlock, "delete-on-unlock", false, "lock option DeleteOnUnlock")
	b := &opts.bench
	for name, target := range map[string]*int{
		"size": &b.size, "concurrency": &b.concurrency, "ops": &b.ops, "tasks": &b.tasks,
		"per-task": &b.perTask, "keys": &b.keys, "lists": &b.lists, "notifications": &b.notifications,
		"contenders": &b.contenders, "cycles": &b.cycles, "round": &b.round,
	} {
		flag.IntVar(target, name, 0, "bench parameter "+name)
	}
	flag.Parse()
	// go-zookeeper logs every connection through the standard logger; the output is JSON.
	log.SetOutput(io.Discard)
	opts.endpoints = strings.Split(endpoints, ",")
	if err := run(opts, flag.Args()); err != nil {
		fail(err)
	}
}

// open connects to the store; Redis with the JSON codec, the only one with which the Go
// store's CAS and lock renewal work, or as "redis-raw" the way valkeyrie.NewStore opens it
// (the raw codec: plain values).
func open(ctx context.Context, opts options) (store.Store, error) {
	switch opts.store {
	case "redis":
		return redis.NewWithCodec(ctx, opts.endpoints, nil, &redis.JSONCodec{})
	case "redis-raw":
		return valkeyrie.NewStore(ctx, redis.StoreName, opts.endpoints, nil)
	case "etcdv3":
		return valkeyrie.NewStore(ctx, etcdv3.StoreName, opts.endpoints, &etcdv3.Config{ConnectionTimeout: 5 * time.Second})
	case "zookeeper":
		return valkeyrie.NewStore(ctx, zookeeper.StoreName, opts.endpoints, &zookeeper.Config{ConnectionTimeout: 5 * time.Second})
	case "consul":
		return valkeyrie.NewStore(ctx, consul.StoreName, opts.endpoints, &consul.Config{ConnectionTimeout: 5 * time.Second, Token: opts.token})
	default:
		return nil, fmt.Errorf("unknown store %q", opts.store)
	}
}

func run(opts options, args []string) error {
	if len(args) == 0 {
		return errors.New("missing command")
	}
	ctx := context.Background()
	kv, err := open(ctx, opts)
	if err != nil {
		return fmt.Errorf("open %s: %w", opts.store, err)
	}
	defer kv.Close()

	command, args := args[0], args[1:]
	need := map[string]int{
		"put": 2, "get": 1, "list": 1, "delete": 1, "atomic-put": 3, "atomic-delete": 2,
		"lock-hold": 2, "lock-try": 2, "watch": 1, "watch-tree": 1, "bench-prepare": 2, "bench-run": 2,
	}
	if n, ok := need[command]; !ok {
		return fmt.Errorf("unknown command %q", command)
	} else if len(args) != n {
		return fmt.Errorf("%s takes %d arguments, got %d", command, n, len(args))
	}

	switch command {
	case "put":
		value, err := hex.DecodeString(args[1])
		if err != nil {
			return err
		}
		if err := kv.Put(ctx, args[0], value, &store.WriteOptions{TTL: opts.ttl}); err != nil {
			return err
		}
		say(map[string]string{"event": "written"})
		time.Sleep(opts.hold)
		return nil
	case "get":
		got, err := kv.Get(ctx, args[0], nil)
		if err != nil {
			return err
		}
		say(encode(got))
		return nil
	case "list":
		pairs, err := kv.List(ctx, args[0], nil)
		if err != nil {
			return err
		}
		for _, p := range pairs {
			say(encode(p))
		}
		say(map[string]string{"event": "end"})
		return nil
	case "delete":
		return kv.Delete(ctx, args[0])
	case "atomic-put":
		return atomicPut(ctx, kv, args)
	case "atomic-delete":
		index, err := strconv.ParseUint(args[1], 10, 64)
		if err != nil {
			return err
		}
		current, err := kv.Get(ctx, args[0], nil)
		if err != nil {
			return err
		}
		current.LastIndex = index
		_, err = kv.AtomicDelete(ctx, args[0], current)
		return err
	case "lock-hold", "lock-try":
		return lock(ctx, kv, opts, command == "lock-try", args)
	case "bench-prepare":
		return benchPrepare(ctx, kv, opts.bench, args[0], args[1])
	case "bench-run":
		return benchRun(ctx, kv, opts.bench, args[0], args[1])
	case "watch":
		events, err := kv.Watch(ctx, args[0], nil)
		if err != nil {
			return err
		}
		say(map[string]string{"event": "ready"})
		for i := 0; i < opts.count; i++ {
			say(encode(<-events))
		}
		return nil
	default: // watch-tree
		events, err := kv.WatchTree(ctx, args[0], nil)
		if err != nil {
			return err
		}
		say(map[string]string{"event": "ready"})
		for i := 0; i < opts.count; i++ {
			list := []pair{}
			for _, p := range <-events {
				list = append(list, encode(p))
			}
			say(list)
		}
		return nil
	}
}

func atomicPut(ctx context.Context, kv store.Store, args []string) error {
	value, err := hex.DecodeString(args[1])
	if err != nil {
		return err
	}
	var previous *store.KVPair
	if args[2] != "-" {
		index, err := strconv.ParseUint(args[2], 10, 64)
		if err != nil {
			return err
		}
		previous = &store.KVPair{Key: args[0], LastIndex: index}
	}
	_, written, err := kv.AtomicPut(ctx, args[0], value, previous, nil)
	if err != nil {
		return err
	}
	say(map[string]uint64{"index": written.LastIndex})
	return nil
}

func lock(ctx context.Context, kv store.Store, opts options, try bool, args []string) error {
	value, err := hex.DecodeString(args[1])
	if err != nil {
		return err
	}
	locker, err := kv.NewLock(ctx, args[0], &store.LockOptions{Value: value, TTL: opts.ttl, DeleteOnUnlock: opts.deleteOnUnlock})
	if err != nil {
		return err
	}
	lockCtx := ctx
	if try {
		var cancel context.CancelFunc
		lockCtx, cancel = context.WithTimeout(ctx, opts.timeout)
		defer cancel()
	}
	type outcome struct {
		lost <-chan struct{}
		err  error
	}
	done := make(chan outcome, 1)
	go func() {
		lost, err := locker.Lock(lockCtx)
		done <- outcome{lost, err}
	}()
	var result outcome
	select {
	case result = <-done:
	case <-abandon(try, opts.timeout):
		// The zookeeper store's Lock ignores its context: give up here. Exiting ends the
		// session, which removes this contender's node.
		say(map[string]string{"event": "busy"})
		os.Exit(0)
	}
	lost, err := result.lost, result.err
	// Stopped by its context, etcd and Redis return an error, Consul a nil channel.
	if try && lockCtx.Err() != nil && (err != nil || lost == nil) {
		say(map[string]string{"event": "busy"})
		return nil
	}
	if err != nil {
		return err
	}
	say(map[string]string{"event": "locked"})
	if !try {
		released := make(chan struct{})
		go func() {
			_, _ = bufio.NewReader(os.Stdin).ReadString('\n')
			close(released)
		}()
		select {
		case <-released:
		case <-lost:
			return errors.New("lost: the lock was lost while held")
		}
	}
	if err := locker.Unlock(ctx); err != nil {
		return err
	}
	say(map[string]string{"event": "unlocked"})
	return nil
}

// abandon fires a moment after a try's deadline, for a Lock that ignores its context;
// never for a waiting lock.
func abandon(try bool, timeout time.Duration) <-chan time.Time {
	if !try {
		return nil
	}
	return time.After(timeout + 2*time.Second)
}

func encode(p *store.KVPair) pair {
	return pair{Key: p.Key, Value: hex.EncodeToString(p.Value), Index: p.LastIndex}
}

func say(v any) {
	line, err := json.Marshal(v)
	if err != nil {
		fail(err)
	}
	fmt.Println(string(line))
}

func fail(err error) {
	kind := "other"
	switch {
	case errors.Is(err, store.ErrKeyModified):
		kind = "key_modified"
	case errors.Is(err, store.ErrKeyNotFound):
		kind = "key_not_found"
	case errors.Is(err, store.ErrKeyExists):
		kind = "key_exists"
	case strings.HasPrefix(err.Error(), "lost:"):
		kind = "lost"
	}
	line, _ := json.Marshal(map[string]string{"error": kind, "message": err.Error()})
	fmt.Println(string(line))
	os.Exit(1)
}
