/* What xfer-load fetches (see targets.h). */
#define _GNU_SOURCE
#include "targets.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <xfer/xfer.h>

static void out_of_memory(void) {
  fprintf(stderr, "xfer-load: out of memory\n");
  exit(1);
}

bool target_url_ok(const char *url, char *detail, size_t len) {
  xfer *x = xfer_new();
  xfer_code rc;

  if (!x)
    out_of_memory();
  rc = xfer_set_url(x, url);
  if (rc != XFER_OK)
    snprintf(detail, len, "%s", xfer_get_error_detail(x));
  xfer_free(x);
  return rc == XFER_OK;
}

void target_add(struct target_list *l, const char *url, int line) {
  struct target *grown =
      realloc(l->items, (size_t)(l->n + 1) * sizeof(*l->items));

  if (!grown)
    out_of_memory();
  l->items = grown;
  if (!(l->items[l->n].url = strdup(url)))
    out_of_memory();
  l->items[l->n++].line = line;
}

static void add_bad(struct target_list *l, int line, const char *text,
                    const char *detail) {
  struct bad_line *grown =
      realloc(l->bad, (size_t)(l->nbad + 1) * sizeof(*l->bad));

  if (!grown)
    out_of_memory();
  l->bad = grown;
  l->bad[l->nbad].line = line;
  l->bad[l->nbad].text = strdup(text);
  l->bad[l->nbad].detail = strdup(detail);
  if (!l->bad[l->nbad].text || !l->bad[l->nbad].detail)
    out_of_memory();
  l->nbad++;
}

void target_read_file(struct target_list *l, const char *path) {
  FILE *f = fopen(path, "r");
  char buf[8192], detail[256];
  int line = 0;

  if (!f) {
    fprintf(stderr, "xfer-load: cannot read %s: %s\n", path, strerror(errno));
    exit(2);
  }
  while (fgets(buf, sizeof(buf), f)) {
    char *s = buf, *e;
    line++;
    while (*s == ' ' || *s == '\t')
      s++;
    e = s + strlen(s);
    while (e > s && (e[-1] == '\n' || e[-1] == '\r' || e[-1] == ' '))
      *--e = '\0';
    if (!*s || *s == '#')
      continue;
    if (target_url_ok(s, detail, sizeof(detail)))
      target_add(l, s, line);
    else
      add_bad(l, line, s, detail);
  }
  fclose(f);
}

void target_list_free(struct target_list *l) {
  for (long i = 0; i < l->n; i++)
    free(l->items[i].url);
  for (int i = 0; i < l->nbad; i++) {
    free(l->bad[i].text);
    free(l->bad[i].detail);
  }
  free(l->items);
  free(l->bad);
  memset(l, 0, sizeof(*l));
}
