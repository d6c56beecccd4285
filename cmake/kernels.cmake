# The kernel library: the scalar reference plus each ISA variant, compiled with its own flags (no
# global -march), chosen at run time by csrc/kernels/dispatch.cpp. Included by the top-level
# CMakeLists.txt (the Python module) and by tests/cpp (the C++ kernel tests, also cross-compiled).
set(EXAONE_KERNELS ${EXAONE_ROOT}/csrc/kernels)

add_library(exaone_kernels STATIC
  ${EXAONE_KERNELS}/kernels_scalar.cpp
  ${EXAONE_KERNELS}/dispatch.cpp
  ${EXAONE_KERNELS}/quant_scalar.cpp
  ${EXAONE_KERNELS}/quant_dispatch.cpp)
set_target_properties(exaone_kernels PROPERTIES POSITION_INDEPENDENT_CODE ON)
if(NOT MSVC)
  # The weight quantizer's sums must round alike on every ISA: no mul+add -> fma contraction (GCC
  # contracts by default wherever the target has FMA, which aarch64 always does).
  set_source_files_properties(${EXAONE_KERNELS}/quant_scalar.cpp PROPERTIES COMPILE_OPTIONS "-ffp-contract=off")
endif()

if(CMAKE_SYSTEM_PROCESSOR MATCHES "^(x86_64|AMD64|amd64|i[3-6]86|x86)$")
  set(EXAONE_AVX2_SOURCES ${EXAONE_KERNELS}/kernels_avx2.cpp ${EXAONE_KERNELS}/quant_avx2.cpp)
  target_sources(exaone_kernels PRIVATE ${EXAONE_AVX2_SOURCES})
  # AVX-VNNI (vpdpbusd) variant of the quantized matmuls, where the compiler knows the instruction
  include(CheckCXXCompilerFlag)
  if(MSVC)
    set(EXAONE_HAVE_AVXVNNI_FLAG ON)
  else()
    check_cxx_compiler_flag(-mavxvnni EXAONE_HAVE_AVXVNNI_FLAG)
  endif()
  if(EXAONE_HAVE_AVXVNNI_FLAG)
    target_sources(exaone_kernels PRIVATE ${EXAONE_KERNELS}/quant_avxvnni.cpp)
    if(MSVC)
      set_source_files_properties(${EXAONE_KERNELS}/quant_avxvnni.cpp PROPERTIES COMPILE_OPTIONS "/arch:AVX2")
    else()
      set_source_files_properties(${EXAONE_KERNELS}/quant_avxvnni.cpp PROPERTIES
        COMPILE_OPTIONS "-mavx2;-mfma;-mf16c;-mavxvnni")
    endif()
    target_compile_definitions(exaone_kernels PRIVATE EXAONE_HAVE_AVXVNNI=1)
  endif()
  # AVX-512 F float matmuls (the rest of that table is AVX2's)
  if(MSVC)
    set(EXAONE_HAVE_AVX512_FLAG ON)
  else()
    check_cxx_compiler_flag("-mavx512f -mavx512bw -mavx512vl" EXAONE_HAVE_AVX512_FLAG)
  endif()
  if(EXAONE_HAVE_AVX512_FLAG)
    target_sources(exaone_kernels PRIVATE ${EXAONE_KERNELS}/kernels_avx512.cpp)
    if(MSVC)
      set_source_files_properties(${EXAONE_KERNELS}/kernels_avx512.cpp PROPERTIES COMPILE_OPTIONS "/arch:AVX512")
    else()
      set_source_files_properties(${EXAONE_KERNELS}/kernels_avx512.cpp PROPERTIES
        COMPILE_OPTIONS "-mavx2;-mfma;-mf16c;-mavx512f;-mavx512bw;-mavx512vl")
    endif()
    target_compile_definitions(exaone_kernels PRIVATE EXAONE_HAVE_AVX512=1)
  endif()
  # ... and with AVX-512 VNNI (EVEX, 32 registers)
  if(MSVC)
    set(EXAONE_HAVE_AVX512VNNI_FLAG ON)
  else()
    check_cxx_compiler_flag("-mavx512vnni -mavx512vl" EXAONE_HAVE_AVX512VNNI_FLAG)
  endif()
  if(EXAONE_HAVE_AVX512VNNI_FLAG)
    target_sources(exaone_kernels PRIVATE ${EXAONE_KERNELS}/quant_avx512vnni.cpp)
    if(MSVC)
      set_source_files_properties(${EXAONE_KERNELS}/quant_avx512vnni.cpp PROPERTIES COMPILE_OPTIONS "/arch:AVX512")
    else()
      set_source_files_properties(${EXAONE_KERNELS}/quant_avx512vnni.cpp PROPERTIES
        COMPILE_OPTIONS "-mavx2;-mfma;-mf16c;-mavx512f;-mavx512bw;-mavx512vl;-mavx512vnni")
    endif()
    target_compile_definitions(exaone_kernels PRIVATE EXAONE_HAVE_AVX512VNNI=1)
  endif()
  if(MSVC)
    set_source_files_properties(${EXAONE_AVX2_SOURCES} PROPERTIES COMPILE_OPTIONS "/arch:AVX2")
  else()
    set_source_files_properties(${EXAONE_KERNELS}/kernels_avx2.cpp PROPERTIES COMPILE_OPTIONS "-mavx2;-mfma;-mf16c")
    # the weight quantizer must round exactly like the scalar reference: no mul+add -> fma contraction
    set_source_files_properties(${EXAONE_KERNELS}/quant_avx2.cpp PROPERTIES
      COMPILE_OPTIONS "-mavx2;-mfma;-mf16c;-ffp-contract=off")
  endif()
  target_compile_definitions(exaone_kernels PRIVATE EXAONE_HAVE_AVX2=1)
elseif(CMAKE_SYSTEM_PROCESSOR MATCHES "^(aarch64|arm64|ARM64)$")
  # NEON is part of the ARMv8-A baseline: no per-file flags needed. quant_neon.cpp enables the
  # ARMv8.2 dot product per function, for the table picked only on CPUs that have it.
  target_sources(exaone_kernels PRIVATE ${EXAONE_KERNELS}/kernels_neon.cpp ${EXAONE_KERNELS}/quant_neon.cpp)
  if(NOT MSVC)
    set_source_files_properties(${EXAONE_KERNELS}/quant_neon.cpp PROPERTIES COMPILE_OPTIONS "-ffp-contract=off")
  endif()
  target_compile_definitions(exaone_kernels PRIVATE EXAONE_HAVE_NEON=1)
endif()
