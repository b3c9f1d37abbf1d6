// Package machine says where a benchmark or soak figure was measured
// (CPU model, cores, Go version), for the load and soak tools' reports.
package machine

import (
	"bufio"
	"os"
	"runtime"
	"strings"
)

// Machine says where the figures were measured.
type Machine struct {
	CPUModel   string `json:"cpu_model,omitempty"`
	NumCPU     int    `json:"num_cpu"`
	GOMAXPROCS int    `json:"gomaxprocs"`
	OS         string `json:"goos"`
	Arch       string `json:"goarch"`
	GoVersion  string `json:"go_version"`
	Hostname   string `json:"hostname,omitempty"`
}

// Info describes this machine.
func Info() Machine {
	m := Machine{
		CPUModel:   CPUModel("/proc/cpuinfo"),
		NumCPU:     runtime.NumCPU(),
		GOMAXPROCS: runtime.GOMAXPROCS(0),
		OS:         runtime.GOOS,
		Arch:       runtime.GOARCH,
		GoVersion:  runtime.Version(),
	}
	m.Hostname, _ = os.Hostname()
	return m
}

// CPUModel returns the first "model name" of a cpuinfo file, "" if there is
// none or the file cannot be read.
func CPUModel(path string) string {
	f, err := os.Open(path)
	if err != nil {
		return ""
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		k, v, ok := strings.Cut(sc.Text(), ":")
		if ok && strings.TrimSpace(k) == "model name" {
			return strings.TrimSpace(v)
		}
	}
	return ""
}
