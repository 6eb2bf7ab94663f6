#!/usr/bin/env bash
# The nightly's one issue (label `nightly-failure`): opened when a cell newly
# fails, naming each cell with its kernel build and rerun command (the night's
# `kernel-matrix history --markdown`); edited and commented on when more cells
# newly fail while it is open; closed when every cell it names passes again.
# The cells it is about are kept in its body as `<!-- km-cells: a b -->`.
#
# Environment: SINCE_JSON (the night's `history --json` files, space-separated;
# absent or not JSON on the first night), SINCE_MD (its `--markdown`), RESULTS (the night's results JSON
# files, space-separated), RUN_URL. Needs gh (with GH_TOKEN) and jq.
set -euo pipefail
export LC_ALL=C # one sort order for comm
label=nightly-failure
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

if [ -z "${RESULTS// /}" ]; then
  echo "no results from the night (the matrix did not get to run): the issue is left as it is"
  exit 0
fi
newly=""
# shellcheck disable=SC2086 # SINCE_JSON is a list of files
for f in ${SINCE_JSON:-}; do
  # The first night has no comparison (and no JSON object) yet.
  if jq -e '.newly_failing' "$f" > /dev/null 2>&1; then
    newly=$(printf '%s\n%s\n' "$newly" "$(jq -r '.newly_failing[].trial' "$f")" | sed '/^$/d' | sort -u)
  fi
done
# shellcheck disable=SC2086 # RESULTS is a list of files
failing=$(jq -r '.kernels[] | .kernel as $k | .cells[] | select(.verdict == "fail") | "\($k)::\(.trial)"' $RESULTS | sort -u)
open=$(gh issue list --label "$label" --state open --json number --jq '.[0].number // empty')
cells_of() { sed -n 's/.*<!-- km-cells: \(.*\) -->.*/\1/p' | tr ' ' '\n' | sed '/^$/d' | sort -u; }

if [ -n "$newly" ]; then
  {
    echo "The nightly kernel matrix has cells that newly fail ([run]($RUN_URL)). Each names its kernel build and the command that reruns it."
    echo
    cat "${SINCE_MD:-/dev/null}"
  } > "$tmp/report.md"
  if [ -z "$open" ]; then
    cells=$newly
    gh label create "$label" --color d73a4a --description "A cell of the nightly matrix newly fails" --force
    { cat "$tmp/report.md"; echo; echo "<!-- km-cells: $(echo "$cells" | tr '\n' ' ' | sed 's/ $//') -->"; } > "$tmp/body.md"
    gh issue create --label "$label" --title "Nightly: $(echo "$newly" | wc -l) cell(s) newly failing" --body-file "$tmp/body.md"
  else
    gh issue view "$open" --json body --jq .body > "$tmp/old.md"
    cells=$( { cells_of < "$tmp/old.md"; echo "$newly"; } | sort -u)
    { grep -v '<!-- km-cells:' "$tmp/old.md" || true; echo "<!-- km-cells: $(echo "$cells" | tr '\n' ' ' | sed 's/ $//') -->"; } > "$tmp/body.md"
    gh issue edit "$open" --body-file "$tmp/body.md"
    gh issue comment "$open" --body-file "$tmp/report.md"
  fi
elif [ -n "$open" ]; then
  gh issue view "$open" --json body --jq .body | cells_of > "$tmp/cells"
  still=$(comm -12 "$tmp/cells" <(echo "$failing") | tr '\n' ' ')
  if [ -z "$still" ]; then
    gh issue close "$open" --comment "Every cell this issue names passes again in [the nightly run]($RUN_URL)."
  else
    echo "issue #$open stays open: still failing: $still"
  fi
fi
