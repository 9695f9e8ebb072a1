package main

import "strings"

// runManual is the text of "mworker run --help". Its options section is
// written from runOptions, the table the parser reads, so that the two
// cannot disagree.
func runManual() string {
	var b strings.Builder
	b.WriteString(`Usage: mworker run [options] -- COMMAND [ARG...]

Start a master that runs N copies of COMMAND, forwards signals to them,
reaps every child, reloads them on SIGUSR2 or SIGHUP without dropping a
connection, and exits with a status that tells the truth. COMMAND is
looked up in PATH when it has no slash. Options end at "--"; each takes its
value as "--opt value" or "--opt=value".

Options:
`)
	for _, o := range runOptions {
		name := o.long + " " + o.arg
		if o.short != "" {
			name = o.short + ", " + name
		}
		help := o.help
		if o.def != "" {
			help += " (default " + o.def + ")"
		}
		writeOption(&b, name, help)
	}
	writeOption(&b, "-sf PID...", "once the first generation is ready, send --stop-signal to these pids (HAProxy's -sf)")
	writeOption(&b, "-st PID...", "the same with SIGTERM (HAProxy's -st)")
	writeOption(&b, "-h, --help", "print this manual")
	b.WriteString(`
Durations are Go durations: 500ms, 10s, 1m30s. Restarts back off as
--backoff says, and reset once a worker has stayed up 60s. A restarted
worker that dies within a second of its start 3 times in a row earns one
warning with the likely causes (it binds its own port instead of fd 3,
its command or a file is missing, its configuration is bad).

A worker counts as ready, by default, once it has stayed up 1s: a reload
whose new workers exit within that second (a configuration they reject
after starting) fails and the old workers keep serving. Every reload, and
the first READY=1 to systemd, waits that second. A worker that can say
when it serves should use --ready notify, which trusts READY=1 at once;
--ready immediate skips the wait and the protection.

Signals to the master:
  SIGUSR2, SIGHUP   reload: start a new generation, stop the old one once
                    the new one is ready; an upgrade (a new binary at the
                    start path) first re-execs it with "-sf <live pids>"
  SIGUSR1           soft stop: send --stop-signal to every worker, wait, exit
  SIGTERM, SIGINT   forward the signal to every worker, wait, exit
  other signals     forwarded to the current workers (QUIT, TTIN, WINCH...)
A stop during an ordinary reload drains as any other. During an upgrade's
re-exec, SIGUSR1 is always handled; a SIGTERM or SIGINT in the new image's
first milliseconds ends the master and every worker with it.
Each worker has its own process group, which receives every signal sent to
the worker. Workers are told to stop when the master dies, even by SIGKILL.

Exit status:
  0..255  the status of the current worker whose exit ended the run
          (--restart=no, or the failure that reached --restart-limit),
          or after a stop the first current worker that failed
          (0 if none did);
          a worker killed by signal N counts as 128+N
  1       mworker could not start (e.g. an address cannot be bound)
  2       bad command line (unknown option, bad value, missing "--")
  126     COMMAND is not executable or is a directory
  127     COMMAND was not found

Examples:
  mworker run -n 4 --listen :8080 --ready notify --control /run/app.sock -- ./server
  mworker reload --control /run/app.sock
  mworker run --restart on-failure --stop-timeout 30s -- /app/worker --queue jobs
  kill -USR2 "$(cat /run/app.pid)"
`)
	return b.String()
}

// writeOption writes one option of the manual: its name, then its help
// wrapped to 79 columns in a column of its own.
func writeOption(b *strings.Builder, name, help string) {
	const indent, width = 26, 79
	line := "  " + name
	if len(line) >= indent {
		b.WriteString(line + "\n")
		line = ""
	}
	for _, w := range strings.Fields(help) {
		if len(line) > indent && len(line)+1+len(w) > width {
			b.WriteString(line + "\n")
			line = ""
		}
		if len(line) < indent {
			line += strings.Repeat(" ", indent-len(line))
		} else {
			line += " "
		}
		line += w
	}
	b.WriteString(line + "\n")
}
