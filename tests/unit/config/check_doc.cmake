# Fails when docs/config.md differs from what the descriptor tables generate.
# Run as: cmake -DGEN=<cfg_doc_gen> -DDOC=<docs/config.md> -DOUT=<tmp> -P check_doc.cmake
execute_process(COMMAND ${GEN} OUTPUT_FILE ${OUT} RESULT_VARIABLE rc)
if(NOT rc EQUAL 0)
  message(FATAL_ERROR "cfg_doc_gen failed (${rc})")
endif()
execute_process(COMMAND ${CMAKE_COMMAND} -E compare_files ${OUT} ${DOC}
                RESULT_VARIABLE same)
if(NOT same EQUAL 0)
  message(FATAL_ERROR "docs/config.md is stale: regenerate with "
    "`${GEN} > ${DOC}` (or `build/gantry --config-doc > docs/config.md`)")
endif()
