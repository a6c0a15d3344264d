// Command go-labels burns CPU in three workloads under pprof.Do labels (workload, tenant),
// plus some unlabelled work, and writes a CPU profile: the labelled Go profile the
// sample-label tests record (standard library only; built by the test with `go build`).
//
//	go-labels -out cpu.pb.gz -duration 2s
package main

import (
	"context"
	"crypto/sha256"
	"encoding/json"
	"flag"
	"log"
	"os"
	"runtime/pprof"
	"sort"
	"sync"
	"time"
)

var sink int

func hashWork() {
	buf := make([]byte, 4096)
	for i := 0; i < 64; i++ {
		sum := sha256.Sum256(buf)
		buf[0] = sum[0]
	}
	sink += int(buf[0])
}

func jsonWork() {
	type item struct {
		Name  string
		Value int
		Tags  []string
	}
	items := make([]item, 64)
	for i := range items {
		items[i] = item{Name: "item", Value: i, Tags: []string{"a", "b"}}
	}
	b, _ := json.Marshal(items)
	var back []item
	_ = json.Unmarshal(b, &back)
	sink += len(back)
}

func sortWork() {
	xs := make([]int, 2048)
	for i := range xs {
		xs[i] = (i * 7919) % 2048
	}
	sort.Ints(xs)
	sink += xs[0]
}

func unlabelledWork() {
	x := 0
	for i := 0; i < 100000; i++ {
		x = (x*31 + i) % 1000003
	}
	sink += x
}

func main() {
	out := flag.String("out", "cpu.pb.gz", "where to write the CPU profile")
	duration := flag.Duration("duration", 2*time.Second, "how long to profile")
	flag.Parse()
	f, err := os.Create(*out)
	if err != nil {
		log.Fatal(err)
	}
	if err := pprof.StartCPUProfile(f); err != nil {
		log.Fatal(err)
	}
	deadline := time.Now().Add(*duration)
	workloads := []struct {
		workload, tenant string
		work             func()
	}{
		{"hash", "acme", hashWork},
		{"json", "globex", jsonWork},
		{"sort", "acme", sortWork},
	}
	var wg sync.WaitGroup
	for _, w := range workloads {
		w := w
		wg.Add(1)
		go func() {
			defer wg.Done()
			labels := pprof.Labels("workload", w.workload, "tenant", w.tenant)
			pprof.Do(context.Background(), labels, func(context.Context) {
				for time.Now().Before(deadline) {
					w.work()
				}
			})
		}()
	}
	for time.Now().Before(deadline) {
		unlabelledWork()
	}
	wg.Wait()
	pprof.StopCPUProfile()
	if err := f.Close(); err != nil {
		log.Fatal(err)
	}
}
