package main

// The Go library's side of `cargo xtask bench --with-go`: the benchmark's workloads,
// run in this process through the Go store, measured here so process start-up is not
// counted. `bench-prepare KIND DIR` writes what KIND reads under DIR; `bench-run KIND DIR`
// runs it once and prints {"ops", "elapsed_ns", "latencies_ns", "max_in_flight"} (latencies
// sorted; the most operations in flight at once, 0 for the workloads with no spread).
// Keys and values follow the Rust benchmark's (bench/src/workload.rs) so both sides do
// the same work.

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"sort"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/kvtools/valkeyrie/store"
)

type benchFlags struct {
	size, concurrency, ops, tasks, perTask, keys, lists, notifications, contenders, cycles, round int
}

func value(size, seed int) []byte {
	return bytes.Repeat([]byte{byte('a' + seed%26)}, size)
}

func benchPrepare(ctx context.Context, kv store.Store, b benchFlags, kind, dir string) error {
	switch kind {
	case "get":
		for n := 0; n < 64; n++ {
			if err := kv.Put(ctx, fmt.Sprintf("%s/get-%d", dir, n), value(b.size, n), nil); err != nil {
				return err
			}
		}
	case "increment":
		return kv.Put(ctx, dir+"/counter", []byte("0"), nil)
	case "list":
		_, err := spread(32, b.keys, func(task, n int) error {
			return kv.Put(ctx, fmt.Sprintf("%s/list/%05d", dir, n), value(b.size, n+task), nil)
		})
		return err
	case "watch":
		return kv.Put(ctx, dir+"/watched", []byte("start"), nil)
	}
	return nil
}

// The most operations spread had in flight at once in this process, which the Rust side
// checks against the workload's concurrency.
var maxInFlight atomic.Int64

// spread runs total operations from tasks goroutines; each operation's latency.
func spread(tasks, total int, op func(task, i int) error) ([]time.Duration, error) {
	var next, inFlight atomic.Int64
	var mu sync.Mutex
	var firstErr error
	latencies := make([]time.Duration, 0, total)
	var wg sync.WaitGroup
	for task := 0; task < tasks; task++ {
		wg.Add(1)
		go func(task int) {
			defer wg.Done()
			for {
				i := int(next.Add(1) - 1)
				if i >= total {
					return
				}
				for now := inFlight.Add(1); ; {
					most := maxInFlight.Load()
					if now <= most || maxInFlight.CompareAndSwap(most, now) {
						break
					}
				}
				begun := time.Now()
				err := op(task, i)
				took := time.Since(begun)
				inFlight.Add(-1)
				mu.Lock()
				if err != nil && firstErr == nil {
					firstErr = err
				}
				latencies = append(latencies, took)
				mu.Unlock()
				if err != nil {
					return
				}
			}
		}(task)
	}
	wg.Wait()
	return latencies, firstErr
}

func benchRun(ctx context.Context, kv store.Store, b benchFlags, kind, dir string) error {
	started := time.Now()
	var latencies []time.Duration
	var err error
	switch kind {
	case "put":
		latencies, err = spread(b.concurrency, b.ops, func(task, i int) error {
			return kv.Put(ctx, fmt.Sprintf("%s/put-%d-%d", dir, task, i%8), value(b.size, i+b.round), nil)
		})
	case "get":
		latencies, err = spread(b.concurrency, b.ops, func(task, i int) error {
			_, err := kv.Get(ctx, fmt.Sprintf("%s/get-%d", dir, (task*7+i)%64), nil)
			return err
		})
	case "increment":
		latencies, err = increments(ctx, kv, b, dir+"/counter")
	case "list":
		for i := 0; i < b.lists && err == nil; i++ {
			begun := time.Now()
			var pairs []*store.KVPair
			pairs, err = kv.List(ctx, dir+"/list", nil)
			latencies = append(latencies, time.Since(begun))
			if err == nil && len(pairs) != b.keys {
				err = fmt.Errorf("listed %d keys, expected %d", len(pairs), b.keys)
			}
		}
	case "watch":
		latencies, err = watchLatency(ctx, kv, b, dir+"/watched")
	case "lock":
		latencies, err = spread(b.contenders, b.contenders*b.cycles, func(int, int) error {
			locker, err := kv.NewLock(ctx, dir+"/lock", &store.LockOptions{Value: []byte("bench"), TTL: 20 * time.Second})
			if err != nil {
				return err
			}
			if _, err := locker.Lock(ctx); err != nil {
				return err
			}
			return locker.Unlock(ctx)
		})
	default:
		return fmt.Errorf("unknown workload %q", kind)
	}
	elapsed := time.Since(started)
	if err != nil {
		return err
	}
	sort.Slice(latencies, func(i, j int) bool { return latencies[i] < latencies[j] })
	nanos := make([]int64, len(latencies))
	for i, l := range latencies {
		nanos[i] = l.Nanoseconds()
	}
	say(map[string]any{"ops": len(latencies), "elapsed_ns": elapsed.Nanoseconds(), "latencies_ns": nanos, "max_in_flight": maxInFlight.Load()})
	return nil
}

func increments(ctx context.Context, kv store.Store, b benchFlags, key string) ([]time.Duration, error) {
	return spread(b.tasks, b.tasks*b.perTask, func(int, int) error {
		for {
			current, err := kv.Get(ctx, key, nil)
			if err != nil {
				return err
			}
			n, err := strconv.ParseUint(string(current.Value), 10, 64)
			if err != nil {
				return fmt.Errorf("counter holds %q", current.Value)
			}
			_, _, err = kv.AtomicPut(ctx, key, []byte(strconv.FormatUint(n+1, 10)), current, nil)
			if err == nil {
				return nil
			}
			if !errors.Is(err, store.ErrKeyModified) {
				return err
			}
		}
	})
}

func watchLatency(ctx context.Context, kv store.Store, b benchFlags, key string) ([]time.Duration, error) {
	watchCtx, cancel := context.WithCancel(ctx)
	defer cancel()
	events, err := kv.Watch(watchCtx, key, nil)
	if err != nil {
		return nil, err
	}
	next := func() (*store.KVPair, error) {
		select {
		case pair, ok := <-events:
			if !ok {
				return nil, errors.New("the watch ended")
			}
			return pair, nil
		case <-time.After(10 * time.Second):
			return nil, errors.New("no notification within 10s")
		}
	}
	if _, err := next(); err != nil {
		return nil, err
	}
	latencies := make([]time.Duration, 0, b.notifications)
	for i := 0; i < b.notifications; i++ {
		expected := []byte(fmt.Sprintf("round-%d-%d", b.round, i))
		if err := kv.Put(ctx, key, expected, nil); err != nil {
			return nil, err
		}
		returned := time.Now()
		for {
			pair, err := next()
			if err != nil {
				return nil, err
			}
			if pair != nil && bytes.Equal(pair.Value, expected) {
				break
			}
		}
		latencies = append(latencies, time.Since(returned))
	}
	return latencies, nil
}
