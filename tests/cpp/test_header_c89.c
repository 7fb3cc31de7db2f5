/* meshtalk.h compiles as C89 (ISO C90 with a <stdint.h>): compiled with -std=c89 -pedantic -Werror,
 * never run. */
#include "meshtalk/meshtalk.h"

int meshtalk_header_c89_check(void);

int meshtalk_header_c89_check(void) {
  mt_model_params p = mt_model_default_params();
  mt_session_params s = mt_session_default_params();
  mt_blendshape_params b = mt_blendshape_default_params();
  mt_blendshape_solver_info i;
  i.struct_size = (uint32_t)sizeof i;
  return (int)p.struct_size + (int)s.struct_size + (int)b.struct_size + (int)i.struct_size + (int)MT_OK;
}
