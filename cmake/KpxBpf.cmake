# kpx_bpf_skeleton(<name> <source.bpf.c>)
#
# Compiles a BPF C program with clang (-target bpf, BTF, -O2) into
# ${CMAKE_CURRENT_BINARY_DIR}/<name>.bpf.o and generates its libbpf skeleton
# <name>.skel.h with bpftool. Defines an INTERFACE library <name>_skel whose
# include directory holds the skeleton; link it to embed the program.
find_program(KPX_CLANG NAMES clang-14 clang REQUIRED)
find_program(KPX_BPFTOOL NAMES bpftool PATHS /usr/sbin /usr/local/sbin REQUIRED)
execute_process(COMMAND uname -m OUTPUT_VARIABLE KPX_UNAME_M OUTPUT_STRIP_TRAILING_WHITESPACE)
if(KPX_UNAME_M STREQUAL "x86_64")
  set(KPX_BPF_ARCH x86)
elseif(KPX_UNAME_M STREQUAL "aarch64")
  set(KPX_BPF_ARCH arm64)
else()
  set(KPX_BPF_ARCH ${KPX_UNAME_M})
endif()

function(kpx_bpf_skeleton name source)
  set(obj ${CMAKE_CURRENT_BINARY_DIR}/${name}.bpf.o)
  set(skel_dir ${CMAKE_CURRENT_BINARY_DIR}/skel)
  set(skel ${skel_dir}/${name}.skel.h)
  get_filename_component(src ${source} ABSOLUTE)
  file(GLOB_RECURSE bpf_headers CONFIGURE_DEPENDS
       ${CMAKE_SOURCE_DIR}/bpf/include/*.h ${CMAKE_SOURCE_DIR}/bpf/lib/*.h)
  add_custom_command(
    OUTPUT ${obj}
    COMMAND ${KPX_CLANG} -g -O2 -target bpf -mcpu=v3 -D__TARGET_ARCH_${KPX_BPF_ARCH}
            -Wall -Werror -Wno-unused-function
            -I/usr/include/${KPX_UNAME_M}-linux-gnu
            -I${CMAKE_SOURCE_DIR}/bpf/include -I${CMAKE_SOURCE_DIR}/bpf
            -c ${src} -o ${obj}
    DEPENDS ${src} ${bpf_headers}
    COMMENT "BPF ${name}.bpf.o"
    VERBATIM)
  add_custom_command(
    OUTPUT ${skel}
    COMMAND ${CMAKE_COMMAND} -E make_directory ${skel_dir}
    COMMAND sh -c "${KPX_BPFTOOL} gen skeleton ${obj} name ${name} > ${skel}.tmp && mv ${skel}.tmp ${skel}"
    DEPENDS ${obj}
    COMMENT "BPF skeleton ${name}.skel.h"
    VERBATIM)
  add_custom_target(${name}_skel_gen DEPENDS ${skel})
  add_library(${name}_skel INTERFACE)
  add_dependencies(${name}_skel ${name}_skel_gen)
  target_include_directories(${name}_skel INTERFACE ${skel_dir})
  target_link_libraries(${name}_skel INTERFACE PkgConfig::LIBBPF)
endfunction()
