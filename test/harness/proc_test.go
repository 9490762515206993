package harness

import (
	"os"
	"testing"
)

func TestProcMemoryReadsThisProcess(t *testing.T) {
	rss, hwm, err := ProcMemory(os.Getpid())
	if err != nil {
		t.Fatal(err)
	}
	if rss <= 0 || hwm < rss {
		t.Errorf("VmRSS %d KiB, VmHWM %d KiB: want 0 < RSS <= HWM", rss, hwm)
	}
	if _, _, err := ProcMemory(0); err == nil {
		t.Error("pid 0 gave no error")
	}
}

func TestProcRSSPartsAddUpToTheResidentSet(t *testing.T) {
	anon, file, err := ProcRSSParts(os.Getpid())
	if err != nil {
		t.Fatal(err)
	}
	rss, _, err := ProcMemory(os.Getpid())
	if err != nil {
		t.Fatal(err)
	}
	// RssShmem is the third part; a test binary maps none worth counting.
	if anon <= 0 || file <= 0 || anon+file > rss+1024 || anon+file < rss-1024 {
		t.Errorf("RssAnon %d + RssFile %d KiB against VmRSS %d KiB: want both positive and their sum the RSS", anon, file, rss)
	}
}
