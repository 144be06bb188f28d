// placeholder until translate lands
#include "controller/translate.h"
