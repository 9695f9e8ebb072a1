package osadapter

import (
	"os"
	"path/filepath"
	"testing"
)

func TestElfSymbolsRefusesWhatItCannotRead(t *testing.T) {
	dir := t.TempDir()
	notElf := filepath.Join(dir, "script")
	if err := os.WriteFile(notElf, []byte("#!/bin/sh\n"+string(make([]byte, 100))), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := elfSymbols(notElf, symFwdSig); err == nil {
		t.Error("elfSymbols read a file that is not ELF")
	}
	// An ELF header that names no sections at all: no symbol table.
	hdr := make([]byte, 64)
	copy(hdr, "\x7fELF\x02\x01")
	hdr[0x3a] = 64 // e_shentsize
	if err := os.WriteFile(notElf, hdr, 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := elfSymbols(notElf, symFwdSig); err == nil {
		t.Error("elfSymbols read an ELF file without section headers")
	}
}
