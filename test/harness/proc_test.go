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
