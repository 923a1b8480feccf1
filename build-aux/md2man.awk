# md2man.awk: one page of docs/api/ (or docs/libxfer.md) as a man page.
#
#   awk -v version=0.1.0 [-v section=3] [-v see_also="a b c"] \
#       -f md2man.awk PAGE.md > PAGE.3
#
# The pages are written to a small subset of Markdown, which is all this
# knows: "# name" (the page's name), "## Section", fenced code blocks,
# paragraphs, "- " lists, tables (shown as they are written), and inline
# `code`, **bold**, *emphasis* and [text](link) (the text is kept). The
# NAME line's summary is the first sentence of the Description. POSIX awk
# (Debian's mawk), no extension.

function escape(s) {
  gsub(/\\/, "\\e", s)
  return s
}

# A line of text with its inline markup as roff fonts.
function inline(s,    out, i, j, code) {
  s = escape(s)
  out = ""
  # `code` first, so that a * inside it stays a *.
  while ((i = index(s, "`")) > 0) {
    j = index(substr(s, i + 1), "`")
    if (j == 0)
      break
    code = substr(s, i + 1, j - 1)
    out = out emph(substr(s, 1, i - 1)) "\\fB" code "\\fR"
    s = substr(s, i + j + 1)
  }
  return out emph(s)
}

function emph(s) {
  while (match(s, /\*\*[^*]+\*\*/))
    s = substr(s, 1, RSTART - 1) "\\fB" substr(s, RSTART + 2, RLENGTH - 4) \
        "\\fR" substr(s, RSTART + RLENGTH)
  while (match(s, /\*[^* ][^*]*\*/))
    s = substr(s, 1, RSTART - 1) "\\fI" substr(s, RSTART + 1, RLENGTH - 2) \
        "\\fR" substr(s, RSTART + RLENGTH)
  while (match(s, /\[[^]]*\]\([^)]*\)/)) {
    link = substr(s, RSTART, RLENGTH)
    sub(/\]\(.*/, "", link)
    s = substr(s, 1, RSTART - 1) substr(link, 2) substr(s, RSTART + RLENGTH)
  }
  return s
}

# A text line roff must not read as a request.
function guard(s) {
  if (s ~ /^[.']/)
    return "\\&" s
  return s
}

# The plain text of the summary: no markup, no roff escapes needed.
function plain(s) {
  gsub(/`/, "", s)
  gsub(/\*\*/, "", s)
  return s
}

{ line[NR] = $0 }

END {
  name = line[1]
  sub(/^# */, "", name)
  # The summary: the first sentence of the Description.
  for (i = 1; i <= NR; i++)
    if (line[i] == "## Description") {
      for (i++; i <= NR && line[i] == ""; i++)
        ;
      summary = ""
      for (; i <= NR && line[i] != "" && line[i] !~ /^#/; i++)
        summary = summary (summary == "" ? "" : " ") line[i]
      break
    }
  if (match(summary, /[.:;](  *|$)/))
    summary = substr(summary, 1, RSTART - 1)
  summary = escape(plain(summary))
  upper = toupper(name)
  if (section == "")
    section = 3
  printf ".TH %s %s \"\" \"libxfer %s\" \"libxfer Manual\"\n", upper, \
         section, version
  print ".SH NAME"
  print name " \\- " summary
  fenced = 0
  para = 0
  for (i = 2; i <= NR; i++) {
    l = line[i]
    if (fenced) {
      if (l ~ /^```/) {
        print ".fi"
        print ".RE"
        fenced = 0
        para = 1
      } else {
        print guard(escape(l))
      }
      continue
    }
    if (l ~ /^```/) {
      print ".PP"
      print ".RS 4"
      print ".nf"
      fenced = 1
      continue
    }
    if (l ~ /^## /) {
      sub(/^## */, "", l)
      print ".SH " toupper(l)
      para = 0
      continue
    }
    if (l == "") {
      para = 1
      continue
    }
    if (l ~ /^- /) {
      print ".IP \\(bu 2"
      print guard(inline(substr(l, 3)))
      para = 0
      continue
    }
    if (l ~ /^\|/) { # a table row: as written, without the rule line
      if (l ~ /^\| *---/)
        continue
      print ".nf"
      print guard(inline(l))
      print ".fi"
      continue
    }
    if (para) {
      print ".PP"
      para = 0
    }
    print guard(inline(l))
  }
  if (see_also != "") {
    print ".SH SEE ALSO"
    n = split(see_also, pages, " ")
    for (k = 1; k <= n; k++)
      printf "\\fB%s\\fR(3)%s\n", pages[k], k < n ? "," : ""
  } else if (name != "libxfer") {
    print ".SH SEE ALSO"
    print "\\fBlibxfer\\fR(3)"
  }
}
