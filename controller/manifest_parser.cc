// placeholder until parser lands
#include "controller/manifest_parser.h"
