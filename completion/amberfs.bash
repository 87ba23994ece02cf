# bash completion for amberfs(1) and amberfs-coldsync.
#
# Commands and options come from the program's own --help, so the
# completion stays in step with it; operands follow the command's Usage
# line: ARCHIVE, SRC, DEST and MOUNTPOINT complete directories, SNAPSHOT,
# A and B complete latest, the archive's tags and the snapshot ids that
# `amberfs log` prints (when the archive can be read without a prompt:
# a plain archive, or AMBERFS_PASSPHRASE_FILE set).

# The word at operand position $2 of the Usage line in help text $1.
_amberfs_operand()
{
	local usage
	usage=$(sed -n 's/^Usage: [^ ]* [^ ]* //p' <<<"$1" | head -n 1)
	local -a words=()
	local w inopt=0 all
	read -ra all <<<"$usage"
	for w in "${all[@]}"; do
		if ((inopt)); then
			[[ $w == *\] ]] && inopt=0
			continue
		fi
		case $w in
		\[-*\]) ;;
		\[-*) inopt=1 ;;
		-* | \| | \[OPTIONS\]) ;;
		*) words+=("${w//[\[\]]/}") ;;
		esac
	done
	printf '%s\n' "${words[$2]:-}"
}

# Snapshot names of archive $2: latest, tags, and the ids `log` lists.
_amberfs_snapshots()
{
	local prog=$1 archive=$2
	[[ -d $archive ]] || return
	printf '%s\n' latest
	git --git-dir="$archive" for-each-ref --format='%(refname:strip=2)' refs/tags \
		2>/dev/null
	"$prog" log "$archive" </dev/null 2>/dev/null | awk '$1 ~ /^[0-9a-f]+$/ { print $1 }'
}

_amberfs()
{
	local cur prev words cword
	_init_completion -n : || return

	local prog=${words[0]} i cmd= cmdi=0
	for ((i = 1; i < cword; i++)); do
		case ${words[i]} in
		--kdf-profile | --kdf-profile=*) ;;
		-*) ;;
		*) cmd=${words[i]} cmdi=$i; break ;;
		esac
	done

	if [[ -z $cmd ]]; then
		if [[ $cur == -* ]]; then
			COMPREPLY=($(compgen -W '--help --version --kdf-profile=test' -- "$cur"))
		else
			local cmds
			cmds=$(LC_ALL=C "$prog" --help 2>/dev/null |
				sed -n '/^Commands:/,/^$/s/^  \([a-z]\+\) .*/\1/p')
			COMPREPLY=($(compgen -W "$cmds help" -- "$cur"))
		fi
		return
	fi
	[[ $cmd == help ]] && {
		COMPREPLY=($(compgen -W "$(LC_ALL=C "$prog" --help 2>/dev/null |
			sed -n '/^Commands:/,/^$/s/^  \([a-z]\+\) .*/\1/p')" -- "$cur"))
		return
	}

	local help
	help=$(LC_ALL=C "$prog" "$cmd" --help 2>/dev/null)
	# option arguments
	case $prev in
	--passphrase-file | --signing-key | --public-key | --log)
		_filedir
		return
		;;
	-o)
		[[ $cmd == mount ]] && COMPREPLY=($(compgen -W 'passphrase_file= cache_size= node_cache= dir_cache=
			cache_dir= stream= allow_other allow_root default_permissions
			show_provenance log= ro keyfile= share= share_passphrase_file=
			token_uri= pin_file=' -- "${cur##*,}"))
		compopt -o nospace 2>/dev/null
		return
		;;
	--*)
		# an option that takes a value: "--name WORD" in the help
		if grep -qE -- "(^|[ ,])$prev [A-Z]" <<<"$help"; then
			return
		fi
		;;
	-[a-zA-Z])
		if grep -qE -- "(^|[ ,])$prev,? [A-Z]|^ *$prev, --[a-z-]+ [A-Z]" <<<"$help"; then
			return
		fi
		;;
	esac

	if [[ $cur == -* ]]; then
		local opts
		opts=$(grep -oE -- '(^|[ ,])--?[a-zA-Z][a-z-]*' <<<"$help" | tr -d ' ,' | sort -u)
		COMPREPLY=($(compgen -W "$opts" -- "$cur"))
		return
	fi

	# which operand is this? (skip options and their values)
	local n=0 archive=
	for ((i = cmdi + 1; i < cword; i++)); do
		case ${words[i]} in
		-o) ((i++)) ;;
		--*=*) ;;
		-*)
			grep -qE -- "(^|[ ,])${words[i]},? [A-Z]|^ *${words[i]}, --[a-z-]+ [A-Z]" \
				<<<"$help" && ((i++))
			;;
		*)
			[[ $n == 0 || ($cmd == key && $n == 1) ]] && archive=${words[i]}
			((n++))
			;;
		esac
	done
	if [[ $cmd == key && $n == 0 ]]; then
		# the subcommands, one per usage line of `amberfs key --help`
		COMPREPLY=($(compgen -W "$(sed -nE 's/^(Usage:)? *amberfs key ([a-z0-9-]+).*/\2/p' \
			<<<"$help")" -- "$cur"))
		return
	fi
	local what
	what=$(_amberfs_operand "$help" "$n")
	case $what in
	ARCHIVE | SRC | DEST | MOUNTPOINT)
		_filedir -d
		;;
	SNAPSHOT* | A | B)
		archive=$(eval printf '%s' "$archive" 2>/dev/null)
		COMPREPLY=($(compgen -W "$(_amberfs_snapshots "$prog" "$archive")" -- "$cur"))
		;;
	new-signing | SUBCMD)
		COMPREPLY=($(compgen -W 'new-signing show-public' -- "$cur"))
		;;
	REMOTE | PATH)
		_filedir
		;;
	esac
} &&
	complete -F _amberfs amberfs

_amberfs_coldsync()
{
	local cur prev words cword
	_init_completion || return
	_filedir -d
} &&
	complete -F _amberfs_coldsync amberfs-coldsync
