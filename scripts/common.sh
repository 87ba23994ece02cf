# Sourced by scripts/demo, scripts/test and the sweeps: how they tell the user what
# they are doing.  Bold only on a terminal: a log or a pipe gets plain text.

# say TEXT...: a section heading on standard output.
say() {
	if [ -t 1 ]; then
		printf '\n\033[1m== %s\033[0m\n' "$*"
	else
		printf '\n== %s\n' "$*"
	fi
}

# step TEXT...: one line saying what the next (possibly long) step does.
step() {
	printf '%s: %s\n' "${0##*/}" "$*"
}

# side_by_side JOBS LABEL COMMAND...: run COMMAND JOBS times at once, the
# i-th with "--sample JOBS --offset i" appended (the sweeps' way of taking
# every JOBS-th point), then print each run's output under a heading
# (JOBS 1: COMMAND as it is, its output as it comes).
# Returns 1 if any run failed.
side_by_side() {
	_jobs=$1 _label=$2
	shift 2
	case $_jobs in ''|*[!0-9]*|0) echo "${0##*/}: -j wants a positive number, not '$_jobs'" >&2; return 2 ;; esac
	if [ "$_jobs" -eq 1 ]; then
		"$@"
		return
	fi
	_logs=$(mktemp -d "${TMPDIR:-/tmp}/amberfs-sweep.XXXXXX")
	_i=0 _pids="" _rc=0
	while [ $_i -lt "$_jobs" ]; do
		"$@" --sample "$_jobs" --offset $_i > "$_logs/$_i" 2>&1 &
		_pids="$_pids $!"
		_i=$((_i + 1))
	done
	for _p in $_pids; do wait "$_p" || _rc=1; done
	_i=0
	while [ $_i -lt "$_jobs" ]; do
		printf '== %s, part %d of %d\n' "$_label" $((_i + 1)) "$_jobs"
		cat "$_logs/$_i"
		_i=$((_i + 1))
	done
	rm -rf "$_logs"
	return $_rc
}
