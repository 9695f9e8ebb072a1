package fsm

// The restart policy beyond --restart: the --restart-limit window of each
// slot and the warning about workers that die as soon as they start. The
// core has no clock: "within WINDOW" and "within a second" are timers,
// TimerRestartWindow armed at a slot's first failure and TimerQuick armed
// at each restarted worker's start.

// limitReached counts a failure of slot against --restart-limit. The first
// failure opens the slot's window; the one that reaches the count ends the
// run with its status (the culprit), as --restart no does, and no restart
// is scheduled.
func (m *Machine) limitReached(slot int, st ExitStatus) bool {
	lim := m.cfg.RestartLimit
	if lim.Count == 0 || slot >= len(m.limitCounts) {
		return false
	}
	m.limitCounts[slot]++
	n := m.limitCounts[slot]
	if n < lim.Count {
		if n == 1 {
			m.setTimer(Timer{Kind: TimerRestartWindow, Generation: m.cur, Slot: slot}, lim.Window)
		}
		return false
	}
	m.closeRestartWindow(slot)
	m.log(LevelError, "restart limit reached: stopping every worker and exiting with the status of the last failure",
		"generation", m.cur, "slot", slot, "failures", n, "restart-limit", lim.String(), "status", statusAttr(st))
	m.culprit = &st
	m.endWhy = "slot " + itoa(slot) + " reached --restart-limit " + lim.String()
	return true
}

// closeRestartWindow forgets slot's failures: its window passed, or one of
// its workers stayed up Backoff.Reset.
func (m *Machine) closeRestartWindow(slot int) {
	if slot < len(m.limitCounts) && m.limitCounts[slot] > 0 {
		m.limitCounts[slot] = 0
		m.cancelTimer(Timer{Kind: TimerRestartWindow, Generation: m.cur, Slot: slot})
	}
}

// closeRestartWindows closes every slot's window of the serving
// generation: it stops restarting (a promotion, a stop).
func (m *Machine) closeRestartWindows() {
	for slot := range m.limitCounts {
		m.closeRestartWindow(slot)
	}
}

func closeRestartWindow(m *Machine, ev TimerFired) {
	t := ev.Timer
	if t.Generation == m.cur && t.Slot >= 0 && t.Slot < len(m.limitCounts) {
		m.limitCounts[t.Slot] = 0
	}
}

// noteQuickDeath counts a death of slot's worker within QuickDeath of its
// start (or a spawn that failed). QuickDeaths in a row earn one warning
// per generation with the likely causes, not one per death.
func (m *Machine) noteQuickDeath(slot int) {
	for slot >= len(m.quick) {
		m.quick = append(m.quick, 0)
	}
	m.quick[slot]++
	if m.quick[slot] >= QuickDeaths && !m.quickWarned {
		m.quickWarned = true
		m.log(LevelWarn, "workers keep dying within a second of their start; likely causes: the worker binds its own port "+
			"instead of using the socket mworker passes as fd 3 under --listen (\"address already in use\" in its output), "+
			"its command or a file it needs is missing, or its configuration is bad",
			"generation", m.cur, "slot", slot, "deaths", m.quick[slot])
	}
}

// endQuickStreak: the worker outlived its first second, so its slot's
// streak of quick deaths is over.
func endQuickStreak(m *Machine, ev TimerFired) {
	t := ev.Timer
	if w := m.byPid[t.Pid]; w != nil && !w.leaving && w.home.n == m.cur && w.slot < len(m.quick) {
		m.quick[w.slot] = 0
	}
}
