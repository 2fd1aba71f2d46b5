//! Instance names in `openclawctl completions SHELL`: clap's static script, with the positional
//! NAME arguments of `start`, `stop`, `restart`, `logs`, `status`, `watch`, `exec`, `env`,
//! `token`, `explain` and `upgrade` completed by `openclawctl __complete-names` (the daemon's names, else the config dir's).
//! A hidden subcommand rather than clap_complete's dynamic engine (`CompleteEnv`, behind the
//! `unstable-dynamic` feature): the scripts stay the ones users already load, and the names come
//! from the daemon the command line points at (its `--socket`/`--endpoint`/`--token-file`).

/// The commands whose positional arguments are instance names.
pub const NAME_COMMANDS: &str =
    "start stop restart logs status watch exec env token explain upgrade";

/// bash: a wrapper of clap's `_openclawctl` that completes names first (not after `--`, not an
/// option), registered in its place.
pub fn bash_with_names(script: &str) -> String {
    format!(
        r#"{script}
_openclawctl_with_names() {{
    local i w cmd="" opts=() after_dashdash=""
    for ((i = 1; i < COMP_CWORD; i++)); do
        w=${{COMP_WORDS[i]}}
        case "$w" in
            --) after_dashdash=1 ;;
            --socket|--endpoint|--token-file) opts+=("$w" "${{COMP_WORDS[i+1]}}"); i=$((i + 1)) ;;
            -*) ;;
            *) [[ -z $cmd ]] && cmd=$w ;;
        esac
    done
    local cur=${{COMP_WORDS[COMP_CWORD]}}
    case " {NAME_COMMANDS} " in
        *" $cmd "*)
            if [[ -n $cmd && -z $after_dashdash && $cur != -* ]]; then
                local names
                names=$("${{COMP_WORDS[0]}}" "${{opts[@]}}" __complete-names 2>/dev/null)
                COMPREPLY=($(compgen -W "$names" -- "$cur"))
                return 0
            fi ;;
    esac
    _openclawctl "$@"
}}
complete -F _openclawctl_with_names -o bashdefault -o default openclawctl
"#
    )
}

/// fish: one more rule for the name commands.
pub fn fish_with_names(script: &str) -> String {
    format!(
        "{script}\ncomplete -c openclawctl -n \"__fish_seen_subcommand_from {NAME_COMMANDS}\" -f -a \"(openclawctl __complete-names 2>/dev/null)\"\n"
    )
}

/// zsh: the `_default` action of each `name`/`names` argument becomes `_openclawctl_instances`,
/// defined right after the `#compdef` line (before clap's function runs).
pub fn zsh_with_names(script: &str) -> String {
    const FUNCTION: &str = "\n_openclawctl_instances() {\n    local -a names\n    names=(${(f)\"$(openclawctl __complete-names 2>/dev/null)\"})\n    compadd -a names\n}\n";
    let mut out = String::with_capacity(script.len() + FUNCTION.len());
    let mut defined = false;
    for line in script.split_inclusive('\n') {
        let is_name_arg = (line.starts_with("':name -- ") || line.starts_with("'*::names -- "))
            && line.contains(":_default'");
        if is_name_arg {
            out.push_str(&line.replacen(":_default'", ":_openclawctl_instances'", 1));
        } else {
            out.push_str(line);
        }
        if !defined && line.starts_with("#compdef") {
            out.push_str(FUNCTION);
            defined = true;
        }
    }
    if !defined {
        return format!("{FUNCTION}{out}");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zsh_names_arguments_complete_instances() {
        let script = "#compdef openclawctl\n\nautoload -U is-at-least\n'*::names -- The instances:_default' \\\n':name -- The instance:_default' \\\n'*::command -- The command:_default' \\\n";
        let out = zsh_with_names(script);
        assert!(out.starts_with("#compdef openclawctl\n\n_openclawctl_instances() {"));
        assert!(out.contains("'*::names -- The instances:_openclawctl_instances' \\\n"));
        assert!(out.contains("':name -- The instance:_openclawctl_instances' \\\n"));
        // The command of `exec` is not a name.
        assert!(out.contains("'*::command -- The command:_default'"));
    }
}
