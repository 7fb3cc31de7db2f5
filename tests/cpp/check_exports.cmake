# cmake -DLIBRARY=libmeshtalk_fast.so -DNM=nm -P check_exports.cmake
# Fails unless every function the shared library defines and exports is an mt_* function of the C API
# (meshtalk.h), and all of the model and blendshape parts' are there.
execute_process(COMMAND "${NM}" -D --defined-only "${LIBRARY}" OUTPUT_VARIABLE _out RESULT_VARIABLE _rc)
if(NOT _rc EQUAL 0)
  message(FATAL_ERROR "${NM} -D --defined-only ${LIBRARY} failed (${_rc})")
endif()
string(REPLACE "\n" ";" _lines "${_out}")
set(_exported "")
foreach(_line IN LISTS _lines)
  if(_line MATCHES "^[0-9a-fA-F]+ [TW] (.+)$")
    set(_name "${CMAKE_MATCH_1}")
    if(NOT _name MATCHES "^mt_" AND NOT _name MATCHES "^_(init|fini)$")
      message(FATAL_ERROR "${LIBRARY} exports '${_name}', expected only the C API's mt_* functions")
    endif()
    list(APPEND _exported "${_name}")
  endif()
endforeach()
foreach(_fn mt_status_string mt_last_error mt_version mt_api_version mt_model_default_params mt_model_load
            mt_model_load_from_memory mt_model_free mt_model_get_info mt_model_num_frames mt_model_latency_samples
            mt_session_default_params mt_batch_default_params mt_blendshape_default_params
            mt_blendshape_solver_create mt_blendshape_solver_create_for_model mt_blendshape_solver_free
            mt_blendshape_solver_get_info mt_blendshape_solver_solve mt_blendshape_solver_reset mt_session_pop_weights)
  if(NOT _fn IN_LIST _exported)
    message(FATAL_ERROR "${LIBRARY} does not export ${_fn}")
  endif()
endforeach()
list(LENGTH _exported _n)
message(STATUS "${LIBRARY}: ${_n} exported functions, all mt_*")
