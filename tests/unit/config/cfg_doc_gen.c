/* Prints the config reference generated from the descriptor tables, as
 * `gantry --config-doc` does; the config_doc_fresh test compares it with
 * docs/config.md. */
#include "cfg.h"

int main(void)
{
    cfg_write_doc(stdout);
    return fflush(stdout) == 0 ? 0 : 1;
}
