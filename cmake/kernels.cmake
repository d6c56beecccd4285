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
  # The optional x86 variants, each built where the compiler knows its instructions:
  # file, GCC/Clang flags, MSVC flag, compile definition.
  include(CheckCXXCompilerFlag)
  function(exaone_isa_variant file flags msvc_flag define)
    string(REPLACE ";" " " flag_string "${flags}")
    if(MSVC)
      set(ok ON)
    else()
      check_cxx_compiler_flag("${flag_string}" ${define}_FLAG)
      set(ok ${${define}_FLAG})
    endif()
    if(ok)
      target_sources(exaone_kernels PRIVATE ${EXAONE_KERNELS}/${file})
      if(MSVC)
        set_source_files_properties(${EXAONE_KERNELS}/${file} PROPERTIES COMPILE_OPTIONS "${msvc_flag}")
      else()
        set_source_files_properties(${EXAONE_KERNELS}/${file} PROPERTIES COMPILE_OPTIONS "${flags}")
      endif()
      target_compile_definitions(exaone_kernels PRIVATE ${define}=1)
    endif()
  endfunction()
  set(EXAONE_AVX2_FLAGS -mavx2 -mfma -mf16c)
  set(EXAONE_AVX512_FLAGS ${EXAONE_AVX2_FLAGS} -mavx512f -mavx512bw -mavx512vl)
  if(NOT MSVC)
    # Clang 18-20 put the 512-bit registers in a feature of their own, evex512, which -mavx512f
    # does not always bring along (zig 0.15's driver, for one): ask for it where it exists.
    check_cxx_compiler_flag("-mevex512" EXAONE_EVEX512_FLAG)
    if(EXAONE_EVEX512_FLAG)
      list(APPEND EXAONE_AVX512_FLAGS -mevex512)
    endif()
  endif()
  # AVX-VNNI (VEX vpdpbusd) quantized matmuls
  exaone_isa_variant(quant_avxvnni.cpp "${EXAONE_AVX2_FLAGS};-mavxvnni" /arch:AVX2 EXAONE_HAVE_AVXVNNI)
  # AVX-512 F float matmuls (the rest of that table is AVX2's)
  exaone_isa_variant(kernels_avx512.cpp "${EXAONE_AVX512_FLAGS}" /arch:AVX512 EXAONE_HAVE_AVX512)
  # AVX-512 VNNI quantized matmuls (EVEX, 32 registers, 512-bit prefill)
  exaone_isa_variant(quant_avx512vnni.cpp "${EXAONE_AVX512_FLAGS};-mavx512vnni" /arch:AVX512 EXAONE_HAVE_AVX512VNNI)
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
