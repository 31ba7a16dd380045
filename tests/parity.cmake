# Parity with the real Python packages (transformers, PEFT, tokenizers, lm-evaluation-harness).
# They run from the project venv scripts/setup.sh makes: test dependencies only, never needed to
# run flatune. Each tests/parity/test_*.py is one ctest; they drive the flatune binary and
# parity_logits (flatune's fp32 logits of a folder, for comparing with transformers').
add_executable(parity_logits parity/parity_logits.cpp)
target_link_libraries(parity_logits PRIVATE flatune_model flatune_io flatune_pch)
target_precompile_headers(parity_logits REUSE_FROM flatune_pch)

set(FLATUNE_PYTHON "${CMAKE_SOURCE_DIR}/.venv/bin/python" CACHE FILEPATH
    "Python with transformers, peft, tokenizers and lm_eval (parity tests only)")
if(EXISTS "${FLATUNE_PYTHON}")
  file(GLOB FLATUNE_PARITY_TESTS CONFIGURE_DEPENDS ${CMAKE_CURRENT_SOURCE_DIR}/parity/test_*.py)
  foreach(script ${FLATUNE_PARITY_TESTS})
    get_filename_component(name ${script} NAME_WE)
    add_test(NAME parity.${name} COMMAND "${FLATUNE_PYTHON}" "${script}")
    set_tests_properties(parity.${name} PROPERTIES TIMEOUT 900 ENVIRONMENT
      "HF_HUB_OFFLINE=1;TRANSFORMERS_OFFLINE=1;HF_DATASETS_OFFLINE=1;HF_HOME=${CMAKE_BINARY_DIR}/hf-home;PYTHONUNBUFFERED=1;OMP_WAIT_POLICY=PASSIVE;FLATUNE_BINARY=$<TARGET_FILE:flatune>;PARITY_LOGITS=$<TARGET_FILE:parity_logits>;FLATUNE_SHARED_DEFAULT=${CMAKE_SOURCE_DIR}/../shared")
  endforeach()
else()
  message(WARNING "${FLATUNE_PYTHON} not found: the parity tests against transformers, PEFT, "
                  "tokenizers and lm-evaluation-harness are not registered (scripts/setup.sh makes it)")
endif()
