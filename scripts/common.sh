# Sourced by scripts/demo and scripts/test: how they tell the user what
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
