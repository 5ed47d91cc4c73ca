/* gantry-admin internals: output of API answers as tables (ga_out.c). */
#ifndef GA_H
#define GA_H

#include <stdio.h>

#include <jansson.h>

/* Prints an API answer for people: scalar members as "key: value" lines,
 * arrays of objects as aligned tables (one column per scalar member of
 * the first row), arrays of scalars comma-separated, nested objects
 * indented.  Members named *_ms holding times print as UTC dates. */
void ga_print(FILE *out, const json_t *j);

#endif
