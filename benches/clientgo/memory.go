package main

import (
	"bufio"
	"fmt"
	"os"
	"runtime"
	"strconv"
	"strings"
)

// measure is the memory before a sync, to subtract from the memory after it.
type measure struct {
	hwm, rss int64
	heap     uint64
}

// growth is what a sync added: bytes above the measure taken before it.
type growth struct {
	peak, rss, heap int64
}

// startMeasure resets the peak RSS to the current RSS and records the memory in use.
func startMeasure() (measure, error) {
	// Linux 4.0+: "5" resets VmHWM to the current RSS, so that an earlier transient peak
	// cannot hide part of the sync's. Where refused, the difference still holds but may
	// understate.
	_ = os.WriteFile("/proc/self/clear_refs", []byte("5"), 0)
	heap := liveHeap()
	hwm, err := statusBytes("VmHWM")
	if err != nil {
		return measure{}, err
	}
	rss, err := statusBytes("VmRSS")
	if err != nil {
		return measure{}, err
	}
	return measure{hwm: hwm, rss: rss, heap: heap}, nil
}

// finish reads the memory after the sync: RSS first, since the GC that the heap measure
// needs may change it.
func (m measure) finish() (growth, error) {
	hwm, err := statusBytes("VmHWM")
	if err != nil {
		return growth{}, err
	}
	rss, err := statusBytes("VmRSS")
	if err != nil {
		return growth{}, err
	}
	return growth{
		peak: hwm - m.hwm,
		rss:  rss - m.rss,
		heap: int64(liveHeap()) - int64(m.heap),
	}, nil
}

// liveHeap is the Go heap in use once a GC has freed what is unreachable.
func liveHeap() uint64 {
	runtime.GC()
	var stats runtime.MemStats
	runtime.ReadMemStats(&stats)
	return stats.HeapInuse
}

// statusBytes reads a field of /proc/self/status given in kB, such as VmHWM, in bytes.
func statusBytes(field string) (int64, error) {
	f, err := os.Open("/proc/self/status")
	if err != nil {
		return 0, err
	}
	defer f.Close()
	scanner := bufio.NewScanner(f)
	for scanner.Scan() {
		value, found := strings.CutPrefix(scanner.Text(), field+":")
		if !found {
			continue
		}
		kib, err := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(value), " kB"), 10, 64)
		if err != nil {
			return 0, fmt.Errorf("parsing %s in /proc/self/status: %w", field, err)
		}
		return kib * 1024, nil
	}
	if err := scanner.Err(); err != nil {
		return 0, err
	}
	return 0, fmt.Errorf("no %s in /proc/self/status", field)
}
